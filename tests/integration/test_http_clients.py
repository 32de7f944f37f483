"""The built-in http worker against real HTTP clients: curl, Python's
http.client and ApacheBench (`ab -k`), each skipped when it is not
installed (scripts/bootstrap installs curl and apache2-utils), plus the
corners of HTTP/1.0 a raw socket shows best: no Host, keep-alive asked or
not, a 64 KiB header.  What the worker answers is in test_http.py; here,
that clients which do keep-alive, chunked uploads, 100-continue and HEAD
their own way get what they expect, and the worker's request counter
counts what they sent."""

import http.client
import re
import shutil
import subprocess

import pytest

from fp.base import TIMEOUT, wait_for
from fp.control import call, start_pool
from fp.http import HttpConn, assert_from, start_http


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/bootstrap installs it)")
    return path


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, f"{cmd} exited with {p.returncode}: {p.stderr}"
    return p


def test_curl_keep_alive_head_http10_chunked_and_100_continue(forkpool, tmp_path):
    curl = need("curl")
    m, pool = start_http(forkpool, 1)
    url = f"http://127.0.0.1:{m.port}"
    # Three URLs in one run share one connection (curl says so in -v).
    p = run([curl, "-sS", "-v", f"{url}/", f"{url}/sleep?ms=5", f"{url}/"])
    assert p.stdout.count("hello from worker 0 pid") == 2
    assert "slept 5 ms" in p.stdout
    assert re.search(r"Re-using existing connection|Reusing existing connection",
                     p.stderr), p.stderr
    # HEAD: the headers GET would send, no body (curl waits for none).
    p = run([curl, "-sS", "-I", f"{url}/"])
    assert p.stdout.startswith("HTTP/1.1 200"), p.stdout
    assert re.search(r"(?im)^content-length: \d+$", p.stdout)
    assert re.search(r"(?im)^date: ", p.stdout)
    # HTTP/1.0: answered as 1.0 clients expect, the connection closed.
    p = run([curl, "-sS", "--http1.0", "-i", f"{url}/"])
    assert p.stdout.startswith("HTTP/1.1 200"), p.stdout
    assert re.search(r"(?im)^connection: close$", p.stdout), p.stdout
    assert re.search(r"(?im)^date: ", p.stdout)
    # A chunked upload that waits for "100 Continue" before its body (a
    # GET with a body: read and dropped), then a POST (405, body read too:
    # the connection stays open for the next request).
    body = tmp_path / "body"
    body.write_bytes(b"x" * 50000)
    p = run([curl, "-sS", "-v", "-X", "GET", "-H", "Transfer-Encoding: chunked", "-H",
             "Expect: 100-continue", "--data-binary", f"@{body}", f"{url}/",
             "--next", "-sS", "--data-binary", f"@{body}", f"{url}/"])
    assert p.stdout.startswith("hello from worker 0"), p.stdout
    assert p.stdout.endswith("method not allowed\n"), p.stdout
    assert "HTTP/1.1 100 Continue" in p.stderr, p.stderr
    assert re.search(r"Re-using existing connection|Reusing existing connection",
                     p.stderr), p.stderr
    assert m.stop() == 0


def test_python_http_client_keep_alive_head_and_chunked(forkpool):
    m, pool = start_http(forkpool, 1)
    c = http.client.HTTPConnection("127.0.0.1", m.port, timeout=TIMEOUT)
    try:
        for _ in range(5):
            c.request("GET", "/")
            r = c.getresponse()
            assert r.status == 200
            assert r.read().decode().startswith("hello from worker 0 pid")
            assert r.getheader("Date")
        sock = c.sock  # kept alive: the same socket for every request
        c.request("HEAD", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b""
        assert int(r.getheader("Content-Length")) > 0
        c.request("POST", "/", body=iter([b"abc", b"", b"defgh" * 1000]),
                  encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
        r.read()
        c.request("GET", "/missing")
        r = c.getresponse()
        assert r.status == 404
        r.read()
        assert c.sock is sock
    finally:
        c.close()
    assert m.stop() == 0


def test_ab_keep_alive_and_the_request_counter(forkpool, sock_path):
    ab = need("ab")
    m, pool = start_pool(forkpool, sock_path, 2, "-k", "http", "--check-interval", "0.1")
    n = 2000
    p = run([ab, "-q", "-k", "-n", str(n), "-c", "8", f"http://127.0.0.1:{m.port}/"])
    assert re.search(r"(?m)^Complete requests:\s+%d$" % n, p.stdout), p.stdout
    assert re.search(r"(?m)^Failed requests:\s+0$", p.stdout), p.stdout
    assert re.search(r"(?m)^Keep-Alive requests:\s+%d$" % n, p.stdout), p.stdout

    def counted():
        st = call(sock_path, "status")
        return sum(w["requests"] for w in st["workers"]) == n and st

    st = wait_for(counted, what="the workers' counters to add up to the requests")
    assert {w["id"]: w["pid"] for w in st["workers"]} == pool
    assert m.stop() == 0


def test_http10_without_host_and_keep_alive(forkpool):
    m, pool = start_http(forkpool, 1)
    # HTTP/1.0 needs no Host: answered, then closed.
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and "date" in r.headers
        assert_from(r, pool)
        assert r.headers["connection"].lower() == "close"
        c.wait_eof()
    # With keep-alive asked: kept, and said so, for request after request.
    with HttpConn(m.port) as c:
        for _ in range(3):
            c.sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and "date" in r.headers
            assert r.headers["connection"].lower() == "keep-alive"
        # HEAD over HTTP/1.0: no body, the connection still usable.
        c.sock.sendall(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response("HEAD")
        assert r.status == 200 and r.body == ""
        c.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
        c.wait_eof()
    assert m.stop() == 0


def test_a_64_kib_header_gets_431_and_a_close(forkpool):
    m, pool = start_http(forkpool, 1)
    with HttpConn(m.port) as c:
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 65536 + b"\r\n\r\n")
        r = c.read_response()
        assert r.status == 431
        assert r.headers["connection"].lower() == "close"
        assert "date" in r.headers
        c.wait_eof()
    # The worker goes on serving.
    with HttpConn(m.port) as c:
        assert c.request().status == 200
    assert m.stop() == 0
