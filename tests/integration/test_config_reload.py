"""SIGHUP and `ctl reload` read the --config file again and apply what
changed before the rolling reload; flags still override the file; a file
that cannot be used changes nothing and the log (and ctl's answer) says
why; what needs a new master is said and left."""

import json
import signal

import re

from fp.base import wait_for
from fp.control import Control
from fp.http import HttpConn
from fp.master import Master
from fp.net import echo_roundtrip, free_port, not_served

import pytest


@pytest.fixture
def master(forkpool_bin, tmp_path):
    """master(*args) -> Master, started exactly as asked (no -b, no -k)."""
    masters = []

    def start(*args):
        m = Master(forkpool_bin, [str(a) for a in args], str(tmp_path),
                   name=f"reconf{len(masters)}")
        masters.append(m)
        return m.start()

    yield start
    for m in masters:
        m.kill_all()


def write(path, settings):
    """Write the config as a new file renamed over the old one."""
    tmp = path.with_suffix(".new")
    tmp.write_text(settings if isinstance(settings, str) else json.dumps(settings))
    tmp.rename(path)


def hup(m):
    """SIGHUP, and wait until the master has handled it: the reload
    completed, or was refused."""
    before = len(m.find(r"reload (complete|refused)"))
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload (complete|refused)", count=before + 1)


def test_workers_changed_in_the_file(master, tmp_path):
    port = free_port()
    conf = tmp_path / "pool.json"
    write(conf, {"workers": 2, "worker": "echo", "bind": f"127.0.0.1:{port}"})
    m = master("--config", conf)
    old = m.wait_pool(2)
    write(conf, {"workers": 3, "worker": "echo", "bind": f"127.0.0.1:{port}"})
    hup(m)
    new = m.wait_pool(3)
    assert not set(new.values()) & set(old.values()), f"{old} -> {new}"
    assert echo_roundtrip(("127.0.0.1", port))
    # The slot the new config added was started with it: not replaced.
    assert len(m.find(r"worker 2 pid \d+ started")) == 1, m.describe()
    write(conf, {"workers": 1, "worker": "echo", "bind": f"127.0.0.1:{port}"})
    hup(m)
    m.wait_pool(1)


def test_flags_still_override_the_file(master, tmp_path):
    port = free_port()
    conf = tmp_path / "pool.json"
    write(conf, {"workers": 3, "worker": "echo", "bind": f"127.0.0.1:{port}"})
    m = master("--config", conf, "-w", "2")
    old = m.wait_pool(2)
    write(conf, {"workers": 4, "worker": "echo", "bind": f"127.0.0.1:{port}",
                 "log-format": "json"})
    m.signal(signal.SIGHUP)
    # The file's other keys were applied: the log is JSON from the reload on.
    m.wait_log(r'^\{.*"reload complete"')
    new = m.wait_pool(2)
    assert not set(new.values()) & set(old.values())


def test_worker_and_bind_changed_in_the_file(master, tmp_path):
    old_port, new_port = free_port(), free_port()
    conf = tmp_path / "pool.json"
    write(conf, {"workers": 2, "worker": "echo", "bind": f"127.0.0.1:{old_port}"})
    m = master("--config", conf)
    m.wait_pool(2)
    write(conf, {"workers": 2, "worker": "http", "bind": [f"127.0.0.1:{new_port}"]})
    hup(m)
    new = m.wait_pool(2)
    with HttpConn(new_port) as c:
        resp = c.request()
    assert resp.status == 200 and int(resp.headers["x-pid"]) in new.values()
    m.wait_log(rf"no longer listening on 127\.0\.0\.1:{old_port}\b")
    # The old workers are gone: nobody holds the old address any more.
    wait_for(lambda: not_served(("127.0.0.1", old_port)),
             what=f"127.0.0.1:{old_port} to be closed")


@pytest.mark.parametrize("bad, why", [
    ('{"workers": 3,, }', r"line 1, column \d+"),
    ({"workers": "many"}, r'key "workers"'),
    ({"no-such-key": 1}, r'unknown key "no-such-key"'),
    ({"worker": "/nonexistent/w.so"}, r"/nonexistent/w\.so: No such file"),
])
def test_a_file_that_cannot_be_used_changes_nothing(master, tmp_path, bad, why):
    port = free_port()
    conf = tmp_path / "pool.json"
    ctl = str(tmp_path / "ctl.sock")
    write(conf, {"workers": 2, "worker": "echo", "bind": f"127.0.0.1:{port}"})
    m = master("--config", conf, "--control", ctl)
    old = m.wait_pool(2)
    if isinstance(bad, dict):
        bad = dict({"worker": "echo", "bind": f"127.0.0.1:{port}"}, **bad)
    write(conf, bad)
    hup(m)
    line = m.wait_log(r"reload refused: (.*)$").group(1)
    assert str(conf) in line and re.search(why, line), line
    with Control(ctl) as c:
        rep = c.request("reload")
    assert rep["ok"] is False and str(conf) in rep["error"], rep
    assert m.wait_pool(2) == old
    assert not m.find(r"reload: rolling")
    assert echo_roundtrip(("127.0.0.1", port))


def test_what_needs_a_new_master_is_said_and_left(master, tmp_path):
    port = free_port()
    conf = tmp_path / "pool.json"
    pidfile = tmp_path / "a.pid"
    write(conf, {"workers": 1, "worker": "echo", "bind": f"127.0.0.1:{port}",
                 "pidfile": str(pidfile)})
    m = master("--config", conf)
    old = m.wait_pool(1)
    write(conf, {"workers": 1, "worker": "echo", "bind": f"127.0.0.1:{port}",
                 "pidfile": str(tmp_path / "b.pid"), "reuse-port": True})
    hup(m)
    m.wait_log(r'"pidfile" changed, which needs a new master \(SIGUSR2\): left as it is')
    m.wait_log(r'"reuse-port" changed, which needs a new master')
    new = m.wait_pool(1)
    assert new != old
    assert pidfile.read_text().strip() == str(m.pid)
    assert not (tmp_path / "b.pid").exists()
