"""The config file (--config FILE.json): a good file starts a pool that
serves, flags override the file wherever --config stands, and every kind
of bad file is a usage error (exit 2) whose one stderr line names the key
or the line and column."""

import json
import os

import pytest

from fp.master import Master
from fp.net import EchoClient, free_port, port_is_free


@pytest.fixture
def master(forkpool_bin, tmp_path):
    """Start masters exactly as asked: master(*args) -> Master.

    Unlike the `forkpool` fixture, no -b or -k is added, so the worker and
    the addresses can come from the config file.  Every master and all its
    processes are SIGKILLed in teardown.
    """
    masters = []

    def start(*args, port=None):
        m = Master(forkpool_bin, [str(a) for a in args], str(tmp_path),
                   name=f"config{len(masters)}", port=port)
        masters.append(m)
        return m.start()

    yield start
    for m in masters:
        m.kill_all()


def write_config(tmp_path, settings, name="forkpool.json"):
    """Write `settings` (a dict, or JSON text as is) and return the path."""
    path = tmp_path / name
    text = settings if isinstance(settings, str) else json.dumps(settings, indent=2)
    path.write_text(text)
    return str(path)


def echo_ok(address):
    with EchoClient(address) as c:
        assert c.echo(b"through the config file\n") == b"through the config file\n"


def test_good_file_starts_a_pool_that_serves(master, tmp_path):
    port = free_port()
    sock = str(tmp_path / "echo.sock")
    path = write_config(tmp_path, {
        "worker": "echo",
        "workers": 2,
        "bind": [f"127.0.0.1:{port}", f"unix:{sock}"],
        "worker-timeout": "30s",
        "graceful-timeout": 5,
        "check-interval": 0.5,
        "log-level": "info",
        "log-format": "text",
        "max-restarts": 10,
        "restart-window": "1m",
    })
    m = master("--config", path, port=port)
    m.wait_pool(2)
    echo_ok(("127.0.0.1", port))
    echo_ok(sock)
    assert m.stop() == 0
    assert not os.path.exists(sock)


def test_worker_and_worker_args_from_the_file(master, chaos, tmp_path):
    path = write_config(tmp_path, {
        "worker": chaos,
        "workers": 1,
        "bind": f"127.0.0.1:{free_port()}",
        "worker-args": ["--say", "configured by the file"],
    })
    m = master("--config", path)
    m.wait_pool(1)
    m.wait_out(r"^\[worker 0 pid \d+\] configured by the file$")
    assert m.stop() == 0


@pytest.mark.parametrize("where", ["before", "after"])
def test_flags_override_the_file(master, tmp_path, where):
    file_port, port = free_port(), free_port()
    path = write_config(tmp_path, {
        "worker": "echo",
        "workers": 3,
        "bind": [f"127.0.0.1:{file_port}"],
    })
    flags = ["-w", "2", "-b", f"127.0.0.1:{port}"]
    args = flags + ["--config", path] if where == "before" else ["--config", path] + flags
    m = master(*args, port=port)
    m.wait_pool(2)
    echo_ok(("127.0.0.1", port))
    # --bind on the command line replaced the file's list.
    assert port_is_free(file_port), "the file's --bind was used as well"
    assert m.stop() == 0


def test_worker_args_after_dashes_replace_the_files(master, chaos, tmp_path):
    path = write_config(tmp_path, {
        "worker": chaos,
        "workers": 1,
        "bind": f"127.0.0.1:{free_port()}",
        "worker-args": ["--say", "from the file"],
    })
    m = master("--config", path, "--", "--say", "from the command line")
    m.wait_out(r"\] from the command line$")
    assert not m.find(r"from the file", stream="out")
    assert m.stop() == 0


# (file contents, strings the one stderr line must contain)
BAD_FILES = [
    ('{\n  "workers": 2\n  "bind": "127.0.0.1:1"\n}',
     ["line 3, column 3", "syntax error"]),
    ('{"workers": 2,}', ["line 1, column 15", "syntax error"]),
    ('{\n  "workers": 2,\n  "bind": [\n', ["line 4, column 1", "unexpected end of file"]),
    ('{"workers": 2} x', ["line 1, column 16"]),
    ("", ["line 1, column 1"]),
    ('["workers", 2]', ["expected a JSON object"]),
    ('{"wrokers": 2}', ['unknown key "wrokers"']),
    ('{"workers": 2, "workers": 3}', ['"workers"', "twice"]),
    ('{"config": "other.json"}', ['"config"']),
    ('{"workers": [2]}', ['"workers"', "expected a number or a string", "array"]),
    ('{"log-level": 3}', ['"log-level"', "expected a string", "number"]),
    ('{"daemon": "yes"}', ['"daemon"', "expected true or false"]),
    ('{"bind": ["127.0.0.1:1", 2]}', ['"bind"', "item 2"]),
    ('{"worker-args": "--x"}', ['"worker-args"', "expected an array"]),
    ('{"workers": 0}', ['"workers"', "'0'"]),
    ('{"workers": "many"}', ['"workers"', "'many'"]),
    ('{"worker-timeout": "5parsecs"}', ['"worker-timeout"', "'5parsecs'"]),
    ('{"bind": "example.com:80"}', ['"bind"', "example.com:80"]),
    ('{"worker": "no-such-worker"}', ["no-such-worker"]),
    ('{"max-rss": 1048577}', ['"max-rss"']),
    ('{"max-requests": -1}', ['"max-requests"']),
    ('{"user": "no-such-user-forkpool"}', ['"user"', "no-such-user-forkpool"]),
    ('{"group": "no-such-group-forkpool"}', ['"group"', "no-such-group-forkpool"]),
    ('{"log-format": "xml\\nsecond line"}', ['"log-format"']),
]


@pytest.mark.parametrize("text,wanted", BAD_FILES,
                         ids=[f"bad{i}" for i in range(len(BAD_FILES))])
def test_bad_file_exits_2_with_one_line(run_cli, tmp_path, text, wanted):
    path = write_config(tmp_path, text)
    # A good --bind first: a file wrongly accepted cannot take port 8080.
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "--config", path)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2, f"exit status {res.returncode}; stderr:\n{res.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    assert path in lines[0] or "no-such-worker" in lines[0], lines[0]
    for w in wanted:
        assert w in lines[0], f"{w!r} is not in {lines[0]!r}"


def test_unreadable_file_names_the_path_and_the_reason(run_cli, tmp_path):
    missing = str(tmp_path / "missing.json")
    res = run_cli("--config", missing)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, res.stderr
    assert "--config" in lines[0] and missing in lines[0], lines[0]
    assert os.strerror(2) in lines[0], lines[0]  # ENOENT

    res = run_cli("--config", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert os.strerror(21) in res.stderr, res.stderr  # EISDIR


def test_bad_flag_after_a_good_file_names_the_flag(run_cli, tmp_path):
    path = write_config(tmp_path, {"workers": 2, "bind": f"127.0.0.1:{free_port()}"})
    res = run_cli("--config", path, "-w", "0")
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "--workers" in lines[0], res.stderr


def test_help_lists_the_new_flags(run_cli):
    res = run_cli("--help")
    assert res.returncode == 0
    for flag in ("--config", "--max-restarts", "--restart-window", "--max-requests",
                 "--max-requests-jitter", "--max-lifetime", "--max-rss", "--user",
                 "--group", "--daemon", "--pidfile"):
        assert flag in res.stdout, f"{flag} is not in --help"
