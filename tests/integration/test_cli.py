"""The command line: bad input exits 2 naming the flag, --help/--version,
a port in use exits 1, accepted duration forms and log levels."""

import re
import shutil
import signal
import socket
import subprocess

import pytest

from fp.base import assert_one_line_error, names_flag, wait_for
from fp.http import HttpConn
from fp.logs import LOG_LINE_RE
from fp.net import echo_roundtrip, free_port

# (arguments, the long flag name the one-line error must contain)
BAD_VALUES = [
    (["-w", "0"], "--workers"),
    (["-w", "-1"], "--workers"),
    (["-w", "abc"], "--workers"),
    (["-w", "3abc"], "--workers"),
    (["-w", ""], "--workers"),
    (["-w", "99999999"], "--workers"),
    (["--workers", "4097"], "--workers"),
    (["--workers"], "--workers"),  # missing value
    (["--worker-timeout", "0"], "--worker-timeout"),
    (["--worker-timeout", "abc"], "--worker-timeout"),
    (["--worker-timeout", "-1"], "--worker-timeout"),
    (["--worker-timeout", "5parsecs"], "--worker-timeout"),
    (["--graceful-timeout", "abc"], "--graceful-timeout"),
    (["--check-interval", "abc"], "--check-interval"),
    (["--min-uptime", "abc"], "--min-uptime"),
    (["--log-level", "loud"], "--log-level"),
    (["-b", "127.0.0.1"], "--bind"),
    (["-b", "127.0.0.1:99999"], "--bind"),
    (["-b", "127.0.0.1:abc"], "--bind"),
    (["-b", "example.com:80"], "--bind"),
    (["-b", "[::1:80"], "--bind"),
    (["-k", "no-such-worker"], "--worker"),
    (["-k", "/nonexistent/forkpool-test/worker.so"], "--worker"),
]


@pytest.mark.parametrize("args,flag", BAD_VALUES,
                         ids=[" ".join(a) or "empty" for a, _ in BAD_VALUES])
def test_bad_value_exits_2_naming_the_flag(run_cli, args, flag):
    # A valid --bind comes first, so a value wrongly accepted cannot go for
    # the default port 8080; a bad --bind must fail even after a good one.
    res = run_cli("-b", f"127.0.0.1:{free_port()}", *args)
    assert_one_line_error(res, flag)


@pytest.mark.parametrize("opt", ["--no-such-flag", "-Z"])
def test_unknown_flag_exits_2(run_cli, opt):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", opt)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    assert opt.lstrip("-") in lines[0], lines[0]


def _cc():
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def test_module_without_symbol_exits_2(run_cli, tmp_path):
    cc = _cc()
    if not cc:
        pytest.skip("no C compiler to build a module without the symbol")
    src = tmp_path / "nosym.c"
    src.write_text("int forkpool_test_not_the_symbol = 1;\n")
    so = tmp_path / "nosym.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "-k", so)
    assert_one_line_error(res, "--worker")


def test_module_not_a_shared_object_exits_2(run_cli, tmp_path):
    so = tmp_path / "garbage.so"
    so.write_text("this is not an ELF file\n")
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "-k", so)
    assert_one_line_error(res, "--worker")


@pytest.mark.parametrize("opt", ["-h", "--help"])
def test_help(run_cli, opt):
    res = run_cli(opt)
    assert res.returncode == 0, res.stderr
    for flag in ("--workers", "--bind", "--worker", "--worker-timeout",
                 "--graceful-timeout", "--check-interval", "--log-level",
                 "--help", "--version"):
        assert names_flag(res.stdout, flag), f"--help does not mention {flag}:\n{res.stdout}"


@pytest.mark.parametrize("opt", ["-V", "--version"])
def test_version(run_cli, opt):
    res = run_cli(opt)
    assert res.returncode == 0, res.stderr
    assert re.search(r"\d+\.\d+", res.stdout), f"no version number in {res.stdout!r}"


def test_port_in_use_by_another_socket_exits_1(run_cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = run_cli("-w", "1", "-b", f"127.0.0.1:{port}")
    assert res.returncode == 1, f"exit status {res.returncode}; stderr:\n{res.stderr}"
    assert "in use" in res.stderr, res.stderr


def test_port_in_use_by_another_forkpool_exits_1(forkpool, run_cli):
    # The usual way a port is taken: a second master started by mistake.
    # SO_REUSEPORT on both would let it start silently and steal half the
    # connections.
    first = forkpool("-w", "1")
    first.wait_pool(1)
    res = run_cli("-w", "1", "-b", f"127.0.0.1:{first.port}")
    assert res.returncode == 1, f"exit status {res.returncode}; stderr:\n{res.stderr}"
    assert "in use" in res.stderr, res.stderr
    assert first.alive()
    assert echo_roundtrip(("127.0.0.1", first.port))


def test_durations_accept_fractions_and_ms(forkpool):
    m = forkpool("-w", "1", "--worker-timeout", "2.5", "--graceful-timeout", "0.5",
                 "--check-interval", "100ms", "--min-uptime", "250ms")
    m.wait_pool(1)
    assert echo_roundtrip(("127.0.0.1", m.port))
    assert m.stop() == 0


def test_log_level_error_hides_info(forkpool):
    m = forkpool("-w", "1", "--log-level", "error")
    wait_for(lambda: m.children(), what="a worker")
    # The pool serves although it says nothing.  No "ready" line tells
    # when the worker accepts, so each try gives it the full TIMEOUT: an
    # echo that gets no answer raises AssertionError, which wait_for does
    # not retry (a short per-try timeout failed a worker slow to start).
    # A refused or reset connection (OSError) is tried again.
    def served():
        try:
            return echo_roundtrip(("127.0.0.1", m.port))
        except OSError:
            return False
    wait_for(served, what="echo through a quiet pool")
    assert m.stop() == 0
    for line in m.err.lines():
        lm = LOG_LINE_RE.match(line)
        if lm:
            assert lm.group("level") == "error", f"--log-level error printed {line!r}"


def test_default_worker_is_http_and_serves_after_dash_dash(forkpool):
    # No -k: the fixture adds none (worker=None), so the binary's own
    # default runs, the http worker.  Arguments after `--` belong to the
    # worker; an empty list must work.
    m = forkpool("-w", "1", "--", worker=None)
    assert "-k" not in m.args and not any(a.startswith("--worker") for a in m.args), m.args
    pid = m.wait_pool(1)[0]
    with HttpConn(m.port) as c:
        r = c.request()
    assert r.status == 200, r
    assert r.body == f"hello from worker 0 pid {pid}\n", r
    assert (r.headers["x-worker"], r.headers["x-pid"]) == ("0", str(pid)), r
    assert m.stop(signal.SIGTERM) == 0
