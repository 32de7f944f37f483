"""The control socket (--control PATH): one-shot requests, a connection
that speaks its protocol, and a master started with one."""

import json
import os
import socket
import time

from fp.base import TIMEOUT, wait_for
from fp.net import Conn
from fp.proc import proc_stat


def new_id():
    return os.urandom(4).hex()


def control_replies(path, *reqs, timeout=TIMEOUT):
    """Send request objects to the control socket at path (each given an
    id; all in one write) on one connection; return their replies, each
    checked to echo its id."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        reqs = [dict(id=new_id(), **r) for r in reqs]
        s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
        buf = b""
        deadline = time.monotonic() + timeout
        while buf.count(b"\n") < len(reqs):
            assert time.monotonic() < deadline, f"no reply to {reqs} (have {buf!r})"
            chunk = s.recv(65536)
            assert chunk, f"connection closed before the replies to {reqs} (have {buf!r})"
            buf += chunk
        # Hang up, and wait for the master to hang up too: once this
        # returns the master holds no fd for the connection, so a test
        # counting the master's fds never sees one still closing.
        s.shutdown(socket.SHUT_WR)
        while True:
            assert time.monotonic() < deadline, f"the master kept the connection (have {buf!r})"
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    assert buf.count(b"\n") == len(reqs) and buf.endswith(b"\n"), (
        f"{len(reqs)} replies expected, got {buf!r}")
    reps = [json.loads(line) for line in buf.split(b"\n")[:len(reqs)]]
    for req, rep in zip(reqs, reps):
        assert rep["id"] == req["id"], (req, rep)
    return reps


def control(path, req, timeout=TIMEOUT):
    """One request on a fresh connection to the control socket; its reply."""
    rep, = control_replies(path, req, timeout=timeout)
    return rep


def control_status(path, timeout=TIMEOUT):
    """The result of a "status" request, which must succeed."""
    rep = control(path, {"cmd": "status"}, timeout)
    assert rep["ok"] is True, rep
    return rep["result"]


class Control(Conn):
    """One connection to the control socket."""

    def __init__(self, path, timeout=TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_line(self, timeout=TIMEOUT):
        """The next reply line (bytes, no newline), or None at EOF/reset."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no reply line within {timeout:g} s (have {self.buf[:200]!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert not self.buf, f"connection closed inside a reply: {self.buf[:200]!r}"
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self, timeout=TIMEOUT):
        """The next reply, parsed; it must be one JSON object with "ok"."""
        line = self.read_line(timeout)
        assert line is not None, "the master closed the connection instead of replying"
        rep = json.loads(line.decode("utf-8"))
        assert isinstance(rep, dict) and isinstance(rep.get("ok"), bool), f"bad reply {line!r}"
        assert "id" in rep, f"reply without id: {line!r}"
        if rep["ok"]:
            assert "result" in rep, f"ok reply without result: {line!r}"
        else:
            assert isinstance(rep.get("error"), str) and rep["error"], (
                f"error without text: {line!r}")
        return rep

    def request(self, cmd, **args):
        """Send one request; return the reply, whose id must be ours."""
        rid = new_id()
        self.send(json.dumps(dict(id=rid, cmd=cmd, **args)).encode() + b"\n")
        rep = self.reply()
        assert rep["id"] == rid, f"reply to {rid} carries id {rep['id']!r}"
        return rep

    def call(self, cmd, **args):
        """request() that must succeed; return its result."""
        rep = self.request(cmd, **args)
        assert rep["ok"] is True, f"{cmd} {args} failed: {rep}"
        return rep["result"]

    def is_closed(self, timeout=TIMEOUT):
        """Wait for EOF (or a reset) on the connection; True if it came."""
        return self.read_line(timeout) is None


def call(path, cmd, **args):
    with Control(path) as c:
        return c.call(cmd, **args)


def start_pool(forkpool, sock, n, *args, **kw):
    """A master with the control socket at `sock` and n ready workers:
    (master, {slot: pid})."""
    m = forkpool("-w", str(n), "--control", sock, *args, **kw)
    pool = m.wait_pool(n)
    wait_for(lambda: os.path.exists(sock), what=f"the control socket {sock}")
    return m, pool


def by_slot(st):
    """{slot: [(role, state, pid), ...]} of a status result."""
    out = {}
    for w in st["workers"]:
        out.setdefault(w["id"], []).append((w.get("role"), w["state"], w["pid"]))
    return out


def check_status(m, status, pool):
    """The status result describes exactly `pool` ({slot: pid}), which
    are exactly the master's live children in /proc."""
    assert status["pid"] == m.pid
    assert status["target"] == len(pool)
    assert status["live"] == len(pool)
    assert status["reloading"] is False
    assert isinstance(status["uptime"], (int, float)) and status["uptime"] >= 0
    assert isinstance(status["restarts"], int) and status["restarts"] >= 0
    ws = status["workers"]
    assert sorted(w["id"] for w in ws) == sorted(pool), f"slots in status: {ws}"
    assert {w["id"]: w["pid"] for w in ws} == pool, f"status {ws} != pool {pool}"
    assert m.children() == set(pool.values()), (
        f"children in /proc {sorted(m.children())} != status pids {sorted(pool.values())}")
    for w in ws:
        st = proc_stat(w["pid"])
        assert st is not None and st.ppid == m.pid and st.state != "Z", (
            f"pid {w['pid']} is not a live child of the master: {st}")
        assert w["state"] == "ready", w
        assert w["role"] == "worker", w
        assert isinstance(w["uptime"], (int, float)) and w["uptime"] >= 0, w
        assert isinstance(w["heartbeat_age"], (int, float)) and w["heartbeat_age"] >= 0, w
        assert isinstance(w["restarts"], int) and w["restarts"] >= 0, w
        assert isinstance(w["requests"], int) and w["requests"] >= 0, w
        assert isinstance(w["rss_kib"], int) and w["rss_kib"] > 0, w
        assert w["last_exit"] is None or isinstance(w["last_exit"], str), w


def wait_status_pool(path, m, n):
    """Wait until both /proc and status show exactly n ready workers, the
    same ones; return {slot: pid}."""
    def settled():
        pool = m.pool_state(n)
        if pool is None:
            return None
        status = call(path, "status")
        if {w["id"]: w["pid"] for w in status["workers"]} != pool or status["target"] != n:
            return None
        if any(w["state"] != "ready" for w in status["workers"]):
            return None
        return status, pool
    status, pool = wait_for(settled, what=lambda: (
        f"status and /proc to agree on {n} ready workers "
        f"(children {sorted(m.children())})\n{m.describe()}"))
    check_status(m, status, pool)
    return pool
