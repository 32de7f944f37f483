"""The built-in http worker (workers/http.c): what it answers, keep-alive,
and a graceful stop that drops no request.

The client here is a raw socket speaking HTTP/1.1, so a test sees exactly
what the server sent and how the connection ended: a clean close (EOF)
and a reset are different outcomes.
"""

import collections
import signal
import socket
import threading
import time

from conftest import TIMEOUT, Conn, listen_inodes, socket_inodes, tcp_table, wait_for

Response = collections.namedtuple("Response", "status headers body")


class HttpConn(Conn):
    """One HTTP/1.1 connection to 127.0.0.1:port; responses are read by
    Content-Length, which the worker always sends."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, method="GET", path="/"):
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())

    def _fill(self, what):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed while reading {what} "
                                  f"(got {self.buf[:200]!r})")
        self.buf += data

    def read_response(self, method="GET"):
        while b"\r\n\r\n" not in self.buf:
            self._fill("the headers")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = 0 if method == "HEAD" else int(headers["content-length"])
        while len(self.buf) < length:
            self._fill("the body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(status, headers, body.decode())

    def request(self, method="GET", path="/"):
        self.send(method, path)
        return self.read_response(method)

    def pending(self):
        """True if the server sent something (or closed) by now."""
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) is not None
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)


def start_http(forkpool, workers, *args):
    m = forkpool("-w", str(workers), "-k", "http", *args)
    return m, m.wait_pool(workers)


def assert_from(resp, pool):
    """The response carries X-Pid / X-Worker of a worker of `pool`."""
    slot, pid = int(resp.headers["x-worker"]), int(resp.headers["x-pid"])
    assert pool.get(slot) == pid, f"X-Worker {slot} X-Pid {pid} is not in the pool {pool}"
    return slot, pid


def wait_accepted(m, conns, pids):
    """Wait until the workers `pids` hold the accepted ends of all conns.

    /proc/net/tcp can be long on a busy machine (TIME_WAIT entries), so
    each poll reads it once for all connections."""
    ports = {c.sock.getsockname()[1] for c in conns}

    def accepted():
        inodes = {r.inode for r in tcp_table()
                  if r.local_port == m.port and r.remote_port in ports and r.inode}
        if len(inodes) < len(ports):
            return False
        held = set().union(*(socket_inodes(pid) for pid in pids))
        return inodes <= held
    wait_for(accepted, what="the workers to accept every connection")


def wait_stopped_listening(m, pids):
    """Wait until every worker closed its copy of the listener: its
    on_stop ran."""
    inodes = listen_inodes(m.port)
    assert inodes, "nothing listens on the port"
    wait_for(lambda: all(not (inodes & socket_inodes(pid)) for pid in pids),
             what=lambda: f"the workers {pids} to close their listeners\n{m.describe()}")


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
    nclients = 16
    m, pool = start_http(forkpool, 2)
    lock = threading.Lock()
    done = {}          # client index -> requests answered
    failures = []      # (client, what happened)
    told_close = set()
    counts = [0] * nclients
    stop = threading.Event()  # teardown only: the test failed elsewhere

    def client(i):
        try:
            with HttpConn(m.port) as c:
                while not stop.is_set():
                    r = c.request()
                    if r.status != 200:
                        raise AssertionError(f"status {r.status}: {r.body!r}")
                    assert_from(r, pool)
                    counts[i] += 1
                    if r.headers.get("connection", "").lower() == "close":
                        with lock:
                            told_close.add(i)
                        c.wait_eof()
                        break
        except Exception as e:  # noqa: BLE001 - every failure is counted
            with lock:
                failures.append((i, f"after {counts[i]} requests: {type(e).__name__}: {e}"))
        finally:
            with lock:
                done[i] = counts[i]

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(nclients)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: failures or min(counts) >= 20,
                 what=lambda: f"every client to get 20 answers (counts {counts})")
        assert not failures, failures
        before = sum(counts)
        m.signal(signal.SIGTERM)
        for t in threads:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads), (
            f"clients still running (counts {counts})\n{m.describe()}")
    finally:
        stop.set()
    assert not failures, f"{len(failures)} clients failed: {failures}\n{m.describe()}"
    assert told_close == set(range(nclients)), (
        f"clients never told 'Connection: close': {sorted(set(range(nclients)) - told_close)}")
    assert sum(counts) > before
    assert m.wait_exit() == 0
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b", need_alive=False)
    assert not m.find(r"did not stop within")
    m.assert_tree_gone()
