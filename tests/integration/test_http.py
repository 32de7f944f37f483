"""The built-in http worker (workers/http.c): what it answers.  GET /
names the worker, other paths 404, other methods 405, HEAD says what GET
would send; keep-alive (HTTP/1.0 and 1.1) and pipelining in order;
/sleep answers later without blocking the worker; chunked bodies with
extensions, Expect: 100-continue, a Date on every answer; oversized and
malformed requests are refused and closed.  Stopping: test_http_stop.py;
deadlines and bounds: test_http_limits.py.

The client here is fp.http.HttpConn, a raw socket speaking HTTP/1.1, so a
test sees exactly what the server sent and how the connection ended: a
clean close (EOF) and a reset are different outcomes.
"""

import datetime
import email.utils
import time

from fp.base import wait_for
from fp.http import HttpConn, assert_from, start_http


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


# ---------------------------------------------------------------------------
# The protocol: what llhttp-era behaviour adds to what evhttp did


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
