"""Messages between the master and its workers, and `forkpool ctl events`.

The workers are the chaos module with --echo-messages: each message from
the master is logged by the worker ("chaos worker ID got message: TEXT")
and answered with fpool_worker_send() ("pong ID: TEXT"), which the
forkpool program logs ("worker ID: message (N bytes): pong ID: TEXT") and
shows in `ctl events`.  The library program side (fpool_pool_on_worker,
fpool_pool_send, fpool_pool_on_message) is examples/settings.c, run by
test_examples.py."""

import json
import os
import re
import signal
import socket
import subprocess
import threading

import pytest

from fp.base import TIMEOUT, wait_for
from fp.control import Control, call, new_id, start_pool
from fp.net import recv_to_eof


def ctl(m, sock, *args):
    return subprocess.run([m.binary, "ctl", "--control", sock, *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def echo_pool(forkpool, sock_path, chaos):
    def start(n=3, *extra):
        return start_pool(forkpool, sock_path, n, "-k", chaos, *extra, "--",
                          "--echo-messages")
    return start


def got(m, slot, text):
    return m.find(rf"chaos worker {slot} got message: {re.escape(text)}$")


def test_ctl_send_reaches_one_worker_or_all(echo_pool, sock_path):
    m, pool = echo_pool(3)
    r = ctl(m, sock_path, "send", "1", "to-one")
    assert r.returncode == 0 and r.stdout == "sent to 1 worker\n", r
    m.wait_log(r"worker 1: message \(\d+ bytes\): pong 1: to-one$")
    r = ctl(m, sock_path, "send", "all", "to-all")
    assert r.returncode == 0 and r.stdout == "sent to 3 workers\n", r
    for slot in pool:
        m.wait_log(rf"worker {slot}: message \(\d+ bytes\): pong {slot}: to-all$")
    # Only worker 1 got the first; each got the second once.
    assert got(m, 1, "to-one") and not got(m, 0, "to-one") and not got(m, 2, "to-one")
    assert len(m.find(r"chaos worker \d got message: to-all$")) == 3
    assert m.stop() == 0


def test_ctl_send_errors(echo_pool, sock_path):
    m, pool = echo_pool(2)
    r = ctl(m, sock_path, "send", "7", "nobody")
    assert r.returncode == 1 and "worker 7 has no process" in r.stderr, r
    r = ctl(m, sock_path, "send", "x", "bad id")
    assert r.returncode == 2 and "worker" in r.stderr, r
    r = ctl(m, sock_path, "send", "1")
    assert r.returncode == 2, r
    # Over 64 KiB: refused by the client, and by the master too.
    r = ctl(m, sock_path, "send", "1", "y" * 65537)
    assert r.returncode == 2 and "65536" in r.stderr, r
    reply = call_raw(sock_path, {"cmd": "send", "worker": 1, "data": "y" * 65537})
    assert reply["ok"] is False and "65536" in reply["error"], reply
    reply = call_raw(sock_path, {"cmd": "send", "worker": 1, "data": 5})
    assert reply["ok"] is False and "data" in reply["error"], reply
    # 64 KiB exactly goes through.
    reply = call_raw(sock_path, {"cmd": "send", "worker": 1, "data": "z" * 65536})
    assert reply == {"id": reply["id"], "ok": True, "result": {"sent": 1}}, reply
    m.wait_log(r"chaos worker 1 got message: z{200}$")
    assert m.stop() == 0


def call_raw(path, req):
    with Control(path) as c:
        req = dict(req, id=new_id())
        c.send((json.dumps(req) + "\n").encode())
        return c.reply()


def test_a_worker_that_reads_no_messages_does_not_stall_the_master(forkpool, sock_path, chaos):
    # A hung worker (its loop blocked) reads nothing: its channel fills,
    # and the master says so instead of waiting.
    m, pool = start_pool(forkpool, sock_path, 2, "-k", chaos, "--worker-timeout", "60",
                         "--", "--hang-after", "0")
    full = None
    for i in range(5000):
        reply = call_raw(sock_path, {"cmd": "send", "worker": 0, "data": "m" * 1000})
        if not reply["ok"]:
            full = (i, reply["error"])
            break
    assert full is not None and "channel is full" in full[1], full
    assert full[0] > 10, full  # it did queue some first
    st = call(sock_path, "status")
    assert {w["id"]: w["pid"] for w in st["workers"]} == pool
    # The other worker still gets its messages.
    reply = call_raw(sock_path, {"cmd": "send", "worker": 1, "data": "still"})
    assert reply["ok"] and reply["result"] == {"sent": 1}, reply
    # (The hung workers are killed in the teardown.)


class Events:
    """A `forkpool ctl events` client, its lines read by a thread."""

    def __init__(self, m, sock):
        self.p = subprocess.Popen([m.binary, "ctl", "--control", sock, "events"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(json.loads(line))

    def find(self, **kw):
        return [e for e in list(self.lines) if all(e.get(k) == v for k, v in kw.items())]

    def wait(self, what=None, **kw):
        return wait_for(lambda: self.find(**kw), what=what or f"an event {kw} (have {self.lines})")

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(TIMEOUT)
        self.t.join(TIMEOUT)


def test_ctl_events_shows_a_kill_the_replacement_messages_scale_and_reload(echo_pool, sock_path):
    m, pool = echo_pool(2)
    ev = Events(m, sock_path)
    try:
        # Subscribed once a message sent now shows up.
        wait_for(lambda: ctl(m, sock_path, "send", "0", "probe").returncode == 0 and
                 ev.find(event="message", worker=0, data="pong 0: probe"),
                 what="the events client to be subscribed")
        victim = pool[1]
        os.kill(victim, signal.SIGKILL)
        (ex,) = ev.wait(event="exited", pid=victim)
        assert ex["worker"] == 1 and ex["signal"] == "SIGKILL", ex
        assert ex["status"] == "killed by SIGKILL", ex
        (st,) = ev.wait(event="started", worker=1)
        new = st["pid"]
        assert new != victim
        ev.wait(event="ready", worker=1, pid=new)
        assert ctl(m, sock_path, "scale", "3").returncode == 0
        (sc,) = ev.wait(event="scale")
        assert sc["from"] == 2 and sc["to"] == 3, sc
        ev.wait(event="ready", worker=2)
        assert ctl(m, sock_path, "reload").returncode == 0
        ev.wait(event="reload", phase="begin")
        ev.wait(event="reload", phase="end")
        for e in ev.lines:
            assert isinstance(e["time"], float) and e["event"] in (
                "started", "ready", "exited", "message", "scale", "reload"), e
        # At stop the stream ends and the client exits 0.
        assert m.stop() == 0
        assert ev.p.wait(TIMEOUT) == 0, ev.p.stderr.read()
    finally:
        ev.close()


def test_a_slow_events_client_is_dropped_and_status_stays_fast(echo_pool, sock_path):
    m, pool = echo_pool(1)
    # Subscribe, then never read: the socket's buffers fill, then the
    # master's bound for the client.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(TIMEOUT)
    s.connect(sock_path)
    s.sendall(b'{"id":"e1","cmd":"events"}\n')
    try:
        # Every message a worker sends is an event line: 2000 pongs of
        # about 600 bytes are over 1 MiB of lines.
        big = "p" * 500
        for _ in range(40):
            r = call_raw(sock_path, {"cmd": "send", "worker": "all", "data": big})
            assert r["ok"], r
            if m.find(r"control: dropping an events client"):
                break
            for _ in range(50):
                call_raw(sock_path, {"cmd": "send", "worker": "all", "data": big})
        m.wait_log(r"control: dropping an events client that left \d+ bytes of events unread")
        st = call(sock_path, "status")
        assert st["live"] == 1
        # The dropped client gets EOF once it reads what was sent.
        data = recv_to_eof(s)
        assert data.startswith(b'{"id":"e1","ok":true'), data[:100]
    finally:
        s.close()
    assert m.stop() == 0


def test_an_events_client_that_goes_away_is_freed(echo_pool, sock_path):
    m, pool = echo_pool(1)

    def fds():
        return len(os.listdir(f"/proc/{m.pid}/fd"))

    before = fds()  # no control client yet (start_pool made none)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(sock_path)
    s.sendall(b'{"id":"e2","cmd":"events"}\n')
    line = b""
    while not line.endswith(b"\n"):
        line += s.recv(1)
    assert line.startswith(b'{"id":"e2","ok":true'), line
    assert fds() == before + 1
    # Gone without a word, while nothing happens: the master notices.
    s.close()
    wait_for(lambda: fds() == before, what=lambda: f"the master's fds back to {before} ({fds()})")
    # One that only shut its side still gets its events.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as h:
        h.settimeout(TIMEOUT)
        h.connect(sock_path)
        h.sendall(b'{"id":"e3","cmd":"events"}\n')
        h.shutdown(socket.SHUT_WR)
        assert ctl(m, sock_path, "send", "0", "after-shutdown").returncode == 0
        data = b""
        while b"pong 0: after-shutdown" not in data:
            chunk = h.recv(1 << 16)
            assert chunk, data
            data += chunk
        lines = data.split(b"\n")
        assert lines[0].startswith(b'{"id":"e3","ok":true') and lines[1] == b"", lines
    assert m.stop() == 0
