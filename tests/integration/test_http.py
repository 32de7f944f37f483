"""The built-in http worker (workers/http.c): what it answers, keep-alive,
and a graceful stop that drops no request.

The client here is fp.http.HttpConn, a raw socket speaking HTTP/1.1, so a
test sees exactly what the server sent and how the connection ended: a
clean close (EOF) and a reset are different outcomes.
"""

import datetime
import email.utils
import os
import re
import resource
import signal
import time

from fp.base import TIMEOUT, wait_for
from fp.http import HttpConn, HttpLoad, assert_from, start_http, wait_accepted
from fp.net import free_port
from fp.proc import cpu_share, fd_table, listen_inodes, server_rx_queue, socket_inodes, vm_kib



def test_root_names_each_worker(forkpool):
    m, pool = start_http(forkpool, 2)
    seen = {}

    def both_seen():
        # A new connection each time: the workers share the listener.
        with HttpConn(m.port) as c:
            r = c.request()
        assert r.status == 200
        slot, pid = assert_from(r, pool)
        assert r.body == f"hello from worker {slot} pid {pid}\n"
        assert r.headers["content-length"] == str(len(r.body))
        seen[slot] = pid
        return seen == pool

    wait_for(both_seen, what=lambda: f"answers from both workers {pool} (seen {seen})")
    assert m.stop() == 0
    m.assert_tree_gone()


def test_keep_alive_serves_many_requests_on_one_connection(forkpool):
    m, pool = start_http(forkpool, 2)
    with HttpConn(m.port) as c:
        first = c.request()
        owner = assert_from(first, pool)
        for _ in range(20):
            r = c.request()
            assert r.status == 200
            assert assert_from(r, pool) == owner, "a kept-alive connection changed worker"
            assert r.headers.get("connection", "").lower() != "close"
        # Pipelined: three requests in one write, three answers in order.
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [c.read_response().status for _ in range(3)] == [200, 404, 200]
    assert m.stop() == 0


def test_not_found_and_method_not_allowed(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        for path in ("/nowhere", "/sleepy", "/index.html"):
            r = c.request("GET", path)
            assert r.status == 404, path
            assert_from(r, pool)
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            r = c.request(method, "/")
            assert r.status == 405, method
            assert r.headers["allow"] == "GET, HEAD"
            assert_from(r, pool)
        # Errors do not close a kept-alive connection.
        r = c.request()
        assert r.status == 200
    assert m.stop() == 0


def test_head_has_the_headers_of_get_and_no_body(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        get = c.request("GET")
        head = c.request("HEAD")
        assert head.status == 200
        assert_from(head, pool)
        assert head.headers["content-length"] == str(len(get.body))
        # Had a body followed HEAD's headers, this would read it instead.
        after = c.request("GET")
        assert after.status == 200 and after.body == get.body
    assert m.stop() == 0


def test_sleep_answers_later_without_blocking_the_worker(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as slow, HttpConn(m.port) as fast:
        t0 = time.monotonic()
        # 4 s: a margin for a busy machine to answer `fast` meanwhile.
        slow.send("GET", "/sleep?ms=4000")
        # The only worker answers another connection meanwhile...
        r = fast.request()
        assert r.status == 200
        # ...while the sleep is still pending.
        assert not slow.pending(), "the sleep was answered before 4 s"
        r = slow.read_response()
        assert r.status == 200 and r.body == "slept 4000 ms\n"
        # (libevent times with the coarse clock: a few ms of slack)
        assert time.monotonic() - t0 >= 3.9
        assert_from(r, pool)
        assert fast.request("GET", "/sleep?ms=0").status == 200
        for bad in ("", "?ms=", "?ms=-1", "?ms=60001", "?ms=1.5", "?ms=abc", "?s=10"):
            r = fast.request("GET", "/sleep" + bad)
            assert r.status == 400, bad
            assert_from(r, pool)
    assert m.stop() == 0


def test_sleeps_in_flight_during_sigterm_all_complete(forkpool):
    m, pool = start_http(forkpool, 2)
    pids = list(pool.values())
    conns = [HttpConn(m.port) for _ in range(8)]
    try:
        t0 = time.monotonic()
        for c in conns:
            c.send("GET", "/sleep?ms=6000")
        wait_accepted(m, conns, pids)
        m.signal(signal.SIGTERM)
        assert time.monotonic() - t0 < 5, (
            "the test took too long to send SIGTERM: the sleeps would not be in flight")
        for c in conns:
            r = c.read_response()
            assert r.status == 200 and r.body == "slept 6000 ms\n"
            assert_from(r, pool)
            # Answered after the stop: the connection closes after it.
            assert r.headers.get("connection", "").lower() == "close"
            c.wait_eof()
    finally:
        for c in conns:
            c.close()
    assert m.wait_exit() == 0
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b", need_alive=False)
    m.assert_tree_gone()


def test_sigterm_closes_kept_alive_connections_after_an_idle_grace(forkpool):
    m, pool = start_http(forkpool, 1)
    pid = pool[0]
    with HttpConn(m.port) as idle, HttpConn(m.port) as late:
        assert idle.request().status == 200
        assert late.request().status == 200
        listeners = listen_inodes(m.port)
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        # Requests on a kept-alive connection are answered before and after
        # the stop; once the worker has stopped, the answer says that the
        # connection closes.  (Sent back to back, so this connection is
        # never idle for the grace, however slow the machine.)
        deadline = t0 + TIMEOUT
        while True:
            r = late.request()
            assert r.status == 200
            if r.headers.get("connection", "").lower() == "close":
                break
            assert time.monotonic() < deadline, "no response said Connection: close"
        late.wait_eof()
        # Stopped: the worker let go of its listener.
        assert not (listeners & socket_inodes(pid)), "the stopped worker still listens"
        # The idle one is closed once idle for the grace (1 s), cleanly.
        idle.wait_eof()
        assert time.monotonic() - t0 >= 0.9, "an idle connection was closed before its grace"
    assert m.wait_exit() == 0
    m.wait_log(rf"worker 0 pid {pid} exited with status 0\b", need_alive=False)


def test_keep_alive_clients_during_sigterm_lose_nothing(forkpool):
    """16 clients send requests back to back on kept-alive connections
    while the master is told to stop: every request gets its 200, every
    client is eventually told "Connection: close" and then sees a clean
    close, and the master exits 0."""
    m, pool = start_http(forkpool, 2)
    load = HttpLoad(m.port, keepalive=16, fresh=0, pool=pool, until_close=True)
    try:
        load.start()
        wait_for(lambda: load.failures or min(load.per_client.values()) >= 20,
                 what=lambda: f"every client to get 20 answers ({load.per_client})")
        assert not load.failures, load.failures
        before = load.total()
        m.signal(signal.SIGTERM)
        # Each client ends once told to close (or at its first failure).
        load.join(TIMEOUT, what=m.describe)
    finally:
        load.stop()  # teardown only: the test failed elsewhere
    assert not load.failures, (f"{len(load.failures)} clients failed: {load.failures}\n"
                               f"{m.describe()}")
    never = [c for c, n in load.closes.items() if n == 0]
    assert not never, f"clients never told 'Connection: close': {never}"
    assert load.total() > before
    assert m.wait_exit() == 0
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b", need_alive=False)
    assert not m.find(r"did not stop within")
    m.assert_tree_gone()


# ---------------------------------------------------------------------------
# The protocol: what llhttp-era behaviour adds to what evhttp did


def worker_pid(m, slot=0):
    return int(m.wait_log(rf"\bworker {slot} pid (\d+) ready\b").group(1))


def assert_date_is_now(resp):
    """A Date header in IMF-fixdate (RFC 9110 5.6.7) within a minute of now."""
    value = resp.headers.get("date")
    assert value, f"no Date header in {resp}"
    assert value.endswith(" GMT") and len(value) == 29, value
    when = email.utils.parsedate_to_datetime(value)
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
    assert skew < 60, f"Date {value!r} is {skew:.0f} s off"


def test_chunked_body_with_chunk_extensions_is_accepted(forkpool):
    """RFC 9112 7.1.1: a recipient must ignore unknown chunk extensions
    (evhttp answered 413 and closed).  Token and quoted values, several
    per chunk, a name alone, and a trailer."""
    m, pool = start_http(forkpool, 1)
    body = (b"5;foo=bar;baz=\"q v\";flag\r\nhello\r\n"
            b"3;a=b;c=d\r\nabc\r\n"
            b"4;name\r\nwxyz\r\n"
            b"0;last=1\r\nX-Trailer: t\r\n\r\n")
    with HttpConn(m.port) as c:
        for method, status in (("GET", 200), ("POST", 405)):
            c.sock.sendall(f"{method} / HTTP/1.1\r\nHost: x\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n".encode() + body)
            r = c.read_response()
            assert r.status == status, r
            assert_from(r, pool)
            assert r.headers.get("connection", "").lower() != "close"
        # The connection is still in step: the body was read whole.
        assert c.request().status == 200
    assert m.stop() == 0


def test_date_header_on_http10_and_http11_replies(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        for path in ("/", "/nowhere", "/sleep?ms=0", "/sleep?ms=x"):
            assert_date_is_now(c.request("GET", path))
        assert_date_is_now(c.request("HEAD", "/"))
        assert_date_is_now(c.request("POST", "/"))
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert_date_is_now(r)
        assert r.headers["connection"].lower() == "close"
        c.wait_eof()
    assert m.stop() == 0


def test_expect_100_continue_is_answered_before_the_body(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 5\r\n\r\n")
        # The interim answer comes before the body is sent...
        assert c.read_head() == "HTTP/1.1 100 Continue"
        c.sock.sendall(b"hello")
        # ...and the final one after it.
        r = c.read_response()
        assert r.status == 200
        assert_from(r, pool)
        # Chunked, on the same connection.
        c.sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
        assert c.read_head() == "HTTP/1.1 100 Continue"
        c.sock.sendall(b"3\r\nabc\r\n0\r\n\r\n")
        assert c.read_response().status == 405
        # No body, no interim answer.
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
        assert c.read_response().status == 200
    # Another expectation, however long, is refused (RFC 9110 10.1.1).
    for value in (b"something-else", b"100-continue-please-and-thank-you" * 4):
        refused(m.port, b"GET / HTTP/1.1\r\nHost: x\r\nExpect: " + value
                + b"\r\nContent-Length: 1\r\n\r\nx", 417)
    with HttpConn(m.port) as c:
        # A body over the limit is refused before it is sent.
        c.sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 1000000\r\n\r\n")
        r = c.read_response()
        assert r.status == 413 and r.headers["connection"].lower() == "close"
        c.wait_eof()
    assert m.stop() == 0


def refused(port, data, status):
    """Send `data` on a new connection: the answer is `status` with
    Connection: close, then a clean close."""
    with HttpConn(port) as c:
        c.sock.sendall(data)
        r = c.read_response()
        assert r.status == status, (data[:80], r)
        assert r.headers["connection"].lower() == "close", r
        assert "x-pid" in r.headers and "date" in r.headers
        assert r.headers["content-length"] == str(len(r.body))
        c.wait_eof()
        return r


def test_oversized_and_malformed_requests_are_refused_and_closed(forkpool):
    m, pool = start_http(forkpool, 1)
    big = "a" * (20 * 1024)
    refused(m.port, f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode(), 431)
    # Many small header lines count too.
    lines = "".join(f"X-{i}: y\r\n" for i in range(4000))
    refused(m.port, f"GET / HTTP/1.1\r\n{lines}\r\n".encode(), 431)
    refused(m.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", 413)
    chunk = b"4000\r\n" + b"z" * 0x4000 + b"\r\n"
    refused(m.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 5, 413)
    for garbage in (b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        refused(m.port, garbage, 400)
    # A 64 KiB body is within the limit; the connection stays usable.
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n"
                       + b"b" * 65536)
        assert c.read_response().status == 200
        assert c.request().status == 200
    assert m.stop() == 0


def test_pipelined_answers_keep_their_order_behind_a_sleep(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        t0 = time.monotonic()
        c.sock.sendall(b"GET /sleep?ms=400 HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /sleep?ms=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = c.read_response()
        assert first.status == 200 and first.body == "slept 400 ms\n"
        second = c.read_response()
        # The answer to `/` waited for the sleep before it.
        assert time.monotonic() - t0 >= 0.39
        assert second.status == 200 and second.body.startswith("hello from worker")
        third = c.read_response("HEAD")
        assert third.status == 404 and third.body == ""
        assert third.headers["content-length"] == str(len("not found\n"))
        fourth = c.read_response()
        assert fourth.status == 200 and fourth.body == "slept 0 ms\n"
        assert c.request().status == 200
    assert m.stop() == 0


def test_http10_keep_alive(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        for _ in range(3):
            c.sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200
            assert r.headers["connection"].lower() == "keep-alive"
        c.sock.sendall(b"HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        r = c.read_response("HEAD")
        assert r.status == 200 and r.headers["connection"].lower() == "keep-alive"
        # Without it, the connection closes after the answer.
        c.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.headers["connection"].lower() == "close"
        c.wait_eof()
    # HTTP/1.1 with Connection: close.
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.headers["connection"].lower() == "close"
        c.wait_eof()
    assert m.stop() == 0


def test_head_answers_say_what_get_would_send(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        for path in ("/", "/nowhere", "/sleep?ms=10", "/sleep?ms=bad"):
            get = c.request("GET", path)
            # HEAD and GET pipelined: a body after HEAD would be taken
            # for the GET's answer.
            c.sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                           f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = c.read_response("HEAD")
            again = c.read_response()
            assert head.status == get.status == again.status, path
            assert head.headers["content-length"] == str(len(get.body)), path
            assert again.body == get.body
    assert m.stop() == 0


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
# Stopping


def test_sigterm_closes_a_connection_that_never_sent_a_request_after_the_grace(forkpool):
    m, pool = start_http(forkpool, 1)
    pid = pool[0]
    with HttpConn(m.port) as silent:
        wait_accepted(m, [silent], [pid])
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        wait_for(silent.closed_by_peer, what="the silent connection to be closed")
        took = time.monotonic() - t0
        # The stop grace (1 s), not the header timeout (10 s).
        assert 0.9 <= took < 5, took
    assert m.wait_exit() == 0
    m.wait_log(rf"worker 0 pid {pid} exited with status 0\b", need_alive=False)


def test_sigterm_with_pipelined_input_waiting_closes_after_the_last_answer(forkpool):
    m, pool = start_http(forkpool, 1)
    pid = pool[0]
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET /sleep?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_accepted(m, [c], [pid])
        # Read, so the sleep is in flight with the rest waiting behind it.
        wait_for(lambda: server_rx_queue(m.port, c.sock) == 0,
                 what="the worker to read the requests")
        m.signal(signal.SIGTERM)
        answers = [c.read_response() for _ in range(3)]
        assert [r.status for r in answers] == [200, 200, 404]
        closes = [r.headers.get("connection", "").lower() == "close" for r in answers]
        assert closes == [False, False, True], answers
        c.wait_eof()
    assert m.wait_exit() == 0


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
