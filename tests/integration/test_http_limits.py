"""The http worker's deadlines and bounds: --header-timeout (a slowloris
client or a silent connection is closed at the deadline),
--idle-timeout, bad worker arguments; a client that floods without
reading stays bounded in memory; out of file descriptors it pauses
accepting without spinning; and the activity it reports names the
request in flight (what a hung-worker line says).
"""

import os
import re
import resource
import signal
import time

from fp.base import TIMEOUT, wait_for
from fp.http import HttpConn, start_http, wait_accepted
from fp.net import free_port
from fp.proc import cpu_share, fd_table, server_rx_queue, vm_kib

# ---------------------------------------------------------------------------
# Timeouts (worker arguments after --)


def test_slowloris_connections_are_closed_at_the_header_deadline(forkpool):
    """One header byte every 0.3 s: the deadline counts from the first
    byte (here the accept) and is not pushed back by each byte."""
    m, pool = start_http(forkpool, 1, "--", "--header-timeout", "2s")
    payload = b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 60  # 25 s of bytes
    conns, opened = [], []
    for _ in range(4):
        # The server's deadline counts from its accept, after this.
        opened.append(time.monotonic())
        conns.append(HttpConn(m.port))
    t0 = time.monotonic()
    closed_at = {}
    try:
        sent = 0
        deadline = t0 + TIMEOUT
        while len(closed_at) < len(conns):
            now = time.monotonic()
            assert now < deadline, f"still open after {now - t0:.1f} s: {closed_at}"
            assert sent < len(payload), "the bytes ran out before the server closed"
            for i, c in enumerate(conns):
                if i in closed_at:
                    continue
                if c.closed_by_peer():
                    closed_at[i] = now - opened[i]
                    continue
                try:
                    c.sock.sendall(payload[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed_at[i] = now - opened[i]
            sent += 1
            # Pacing the client, not waiting for a condition.
            time.sleep(0.3)
        for i, c in enumerate(conns):
            # Closed well before the bytes stopped (25 s), not before
            # the deadline, and answered 408 first.
            assert 1.9 <= closed_at[i] <= 2.0 + 4.0, closed_at
            assert c.buf.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), c.buf[:200]
            assert b"\r\nConnection: close\r\n" in c.buf
    finally:
        for c in conns:
            c.close()
    assert m.stop() == 0


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(forkpool):
    m, pool = start_http(forkpool, 1, "--", "--header-timeout", "1s")
    with HttpConn(m.port) as c:
        t0 = time.monotonic()
        wait_for(c.closed_by_peer, what="the silent connection to be closed")
        took = time.monotonic() - t0
        assert 0.5 <= took <= 5, took
        assert c.buf == b"", "no request, so no answer"
    assert m.stop() == 0


def test_idle_keep_alive_connection_closed_after_the_idle_timeout(forkpool):
    m, pool = start_http(forkpool, 1, "--", "--idle-timeout", "1s", "--header-timeout", "30s")
    with HttpConn(m.port) as c:
        # Busy for 2 s, one request every 0.3 s: the idle timeout bounds
        # the gaps, not the connection's life.
        t_end = time.monotonic() + 2
        while True:
            assert c.request().status == 200
            t0 = time.monotonic()
            if t0 >= t_end:
                break
            time.sleep(0.3)  # pacing the client
        wait_for(c.closed_by_peer, what="the idle connection to be closed")
        took = time.monotonic() - t0
        # (The server's idle time starts when it sent the answer, a
        # little before this client read it.)
        assert 0.5 <= took <= 5, took
        assert c.buf == b""
    assert m.stop() == 0


def test_bad_worker_arguments_fail_the_start_with_a_clear_message(run_cli):
    cases = [
        (["--header-timeout", "nope"], r"http: --header-timeout: 'nope' is not a duration"),
        (["--idle-timeout=0"], r"http: --idle-timeout: '0' is not a duration"),
        (["--header-timeout"], r"http: --header-timeout: missing value"),
        (["--keepalive", "3"], r"http: unknown worker argument '--keepalive'"),
    ]
    for args, message in cases:
        res = run_cli("-b", f"127.0.0.1:{free_port()}", "-w", "1", "-k", "http",
                      "--max-restarts", "1", "--restart-window", "60", "--", *args)
        assert res.returncode == 1, (args, res)
        assert re.search(r" error worker 0 pid \d+: " + message, res.stderr), (
            args, res.stderr)
        assert not re.search(r"\bworker 0 pid \d+ ready\b", res.stderr), res.stderr
        assert "failed starts within" in res.stderr, res.stderr


def test_good_worker_arguments_are_taken(forkpool):
    m, pool = start_http(forkpool, 1, "--", "--header-timeout=3", "--idle-timeout", "250ms")
    with HttpConn(m.port) as c:
        assert c.request().status == 200
        t0 = time.monotonic()
        wait_for(c.closed_by_peer, what="the idle connection to be closed")
        assert time.monotonic() - t0 <= 3
    assert m.stop() == 0


# ---------------------------------------------------------------------------
# Peers that misbehave


def test_a_pipelined_flood_from_a_client_that_never_reads_stays_bounded(forkpool):
    m, pool = start_http(forkpool, 1, "--", "--idle-timeout", "3s")
    pid = pool[0]
    with HttpConn(m.port) as warm:
        for _ in range(50):
            assert warm.request().status == 200
    rss0 = vm_kib(pid)
    fds0 = len(fd_table(pid))
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    burst = req * (65536 // len(req))
    floods = [HttpConn(m.port) for _ in range(4)]
    try:
        for c in floods:
            c.sock.setblocking(False)
        # Send until the worker stops taking requests from every client
        # (its answers pile up unread): nothing accepted for 0.5 s.
        sent = 0
        last_progress = time.monotonic()
        deadline = last_progress + TIMEOUT
        while time.monotonic() - last_progress < 0.5:
            assert time.monotonic() < deadline, f"the worker kept reading ({sent} bytes)"
            for c in floods:
                try:
                    n = c.sock.send(burst)
                except BlockingIOError:
                    continue
                sent += n
                last_progress = time.monotonic()
            time.sleep(0.01)
        assert sent > 1024 * 1024, f"only {sent} bytes sent"
        rss = vm_kib(pid)
        # Per connection at most 256 KiB of answers and one 64 KiB read.
        assert rss - rss0 < 16 * 1024, f"RSS grew from {rss0} to {rss} kB after {sent} bytes"
        # The worker still serves others meanwhile.
        with HttpConn(m.port) as other:
            assert other.request().status == 200
        # Clients that take none of their answers for the idle timeout
        # are dropped.
        wait_for(lambda: len(fd_table(pid)) <= fds0,
                 what=lambda: f"the flooding connections to be closed (fds {fd_table(pid)})")
    finally:
        for c in floods:
            c.close()
    assert vm_kib(pid) - rss0 < 16 * 1024
    assert m.stop() == 0


def test_out_of_file_descriptors_pauses_accepting_without_spinning(forkpool):
    m, pool = start_http(forkpool, 1, "--", "--idle-timeout", "60s")
    pid = pool[0]
    # Leave the worker exactly two free descriptors.
    used = set(fd_table(pid))
    limit = 0
    while limit - len([fd for fd in used if fd < limit]) < 2:
        limit += 1
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    held = [HttpConn(m.port) for _ in range(2)]
    late = None
    try:
        for c in held:
            assert c.request().status == 200
        late = HttpConn(m.port)
        late.send()
        m.wait_log(rf"worker 0 pid {pid}: accept on 127\.0\.0\.1:{m.port} failed; "
                   r"pausing accepts.*Too many open files")
        busy = cpu_share(pid, 2)
        assert busy < 0.2, f"the worker used {busy:.0%} of a core while out of descriptors"
        assert len(m.find(r"pausing accepts")) == 1, m.describe()
        assert not late.pending(), "answered while out of descriptors"
        for c in held:
            c.close()
        r = late.read_response()
        assert r.status == 200 and int(r.headers["x-pid"]) == pid
        m.wait_log(rf"worker 0 pid {pid}: accepting on 127\.0\.0\.1:{m.port} again after")
    finally:
        for c in held + ([late] if late else []):
            c.close()
    assert m.stop() == 0


# ---------------------------------------------------------------------------
# What the worker says it is busy with


def worker_pid(m, slot=0):
    return int(m.wait_log(rf"\bworker {slot} pid (\d+) ready\b").group(1))


HUNG_HTTP_RE = (r"\bworker 0 pid {pid} hung: no heartbeat for [\d.]+ s \(--worker-timeout 1 s\); "
                r"it last reported \d+ requests(.*), sending SIGKILL$")


def test_activity_names_the_request_in_flight_and_is_cleared_after(forkpool):
    m = forkpool("-w", "1", "-k", "http", "--worker-timeout", "1", "--check-interval", "0.2")
    pid = worker_pid(m)
    # Idle after a request: nothing to report.
    with HttpConn(m.port) as c:
        assert c.request().status == 200
        os.kill(pid, signal.SIGSTOP)
        hung = m.wait_log(HUNG_HTTP_RE.format(pid=pid))
        assert hung.group(1) == "", hung.string
    pid = m.wait_respawn(0, pid)
    # In a /sleep: that request.
    with HttpConn(m.port) as c:
        c.send("GET", "/sleep?ms=20000")
        wait_accepted(m, [c], [pid])
        # The worker read the request (and so started its sleep, in the
        # same callback) once nothing waits in its socket.
        wait_for(lambda: server_rx_queue(m.port, c.sock) == 0,
                 what="the worker to read the request")
        os.kill(pid, signal.SIGSTOP)
        hung = m.wait_log(HUNG_HTTP_RE.format(pid=pid))
        assert hung.group(1) == ' and was busy with "GET /sleep?ms=20000"', hung.string
    assert m.stop() == 0
