"""HTTP against the built-in http worker: a raw-socket HTTP/1.1 client,
the checks built on it, and HttpLoad, the one HTTP load generator of the
suite.

The client is a plain socket speaking HTTP/1.1, so a test sees exactly
what the server sent and how the connection ended: a clean close (EOF)
and a reset are different outcomes.
"""

import collections
import socket
import threading
import time

from fp.base import TIMEOUT, wait_for
from fp.net import Conn
from fp.proc import socket_inodes, tcp_table

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

    def read_head(self):
        """The next status line and headers only (an interim 1xx
        response has nothing more)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill("the headers")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")

    def closed_by_peer(self):
        """Non-blocking: True once the server closed (EOF or reset);
        bytes it sent before are added to self.buf."""
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(timeout)
        self.buf += data
        return data == b""

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


# ---------------------------------------------------------------------------
# Load


class Request:
    """One request of an HttpLoad client: who sent it (client name, the
    client's connection number, whether it was the first on that
    connection), when (time.monotonic() at its start and end), and either
    the pid and slot that served it (X-Pid, X-Worker) or what went wrong."""

    __slots__ = ("client", "conn", "first", "start", "end", "pid", "slot", "error")

    def __init__(self, client, conn, first, start):
        self.client, self.conn, self.first, self.start = client, conn, first, start
        self.end = self.pid = self.slot = self.error = None


class HttpLoad:
    """HTTP clients on 127.0.0.1:port, each sending `GET /` back to back:
    `keepalive` clients on kept-alive connections and `fresh` clients
    opening a new connection per request.

    A kept-alive client told `Connection: close` opens a new connection
    for its next request (that is no failure), and so does one whose
    request failed; with until_close=True it instead checks that the
    server then closes cleanly (EOF, not a reset) and ends, as does a
    client whose request failed: the shape of a graceful stop, where every
    client must eventually be told to go and nothing may fail.

    A response counts as served only if it is a 200 with a numeric X-Pid
    and, when `body_prefix` (text) is given, a body starting with it, and, when
    `pool` ({slot: pid}) is given, X-Worker and X-Pid of a worker of it.
    Anything else is a failure.

    Two ways to run it:
    - run(seconds, at=[(t, fn)]) sends for `seconds`, calling each fn(), in
      this thread, t seconds after the start; stop(), from such an fn, ends
      the load early (stopped_after: seconds from the start to stop()), so
      it can last until something happened;
    - start(), then stop() (or nothing, with until_close) and join().

    Afterwards, and meanwhile under `lock`: failures [(client, what)],
    counts per kind ("keepalive", "fresh"), served_by {pid: requests},
    per_client {client: requests served}, closes {keep-alive client:
    Connection: close seen}, wall0 (time.time() at the start); and
    requests, every Request, appended as it starts (a list, so it may be
    scanned meanwhile without the lock).
    """

    def __init__(self, port, keepalive=16, fresh=8, body_prefix=None, pool=None,
                 until_close=False):
        self.port = port
        self.nkeepalive = keepalive
        self.nfresh = fresh
        self.body_prefix = body_prefix
        self.pool = dict(pool) if pool is not None else None
        self.until_close = until_close
        self.lock = threading.Lock()
        self.requests = []
        self.failures = []
        self.served_by = {}
        self.counts = {"keepalive": 0, "fresh": 0}
        self.per_client = {}
        self.closes = {}
        self.wall0 = None
        self.stopped_after = None
        self._end = float("inf")
        self._go = threading.Event()
        self._threads = []

    # -- running --

    def start(self):
        """Start every client; they send until stop() (or, with
        until_close, until told to close)."""
        assert not self._threads, "started twice"
        for i in range(self.nkeepalive):
            name = f"keep-alive client {i}"
            self.closes[name] = self.per_client[name] = 0
            self._threads.append(threading.Thread(target=self._client, name=name, daemon=True,
                                                  args=(name, self._keepalive)))
        for i in range(self.nfresh):
            name = f"new-connection client {i}"
            self.per_client[name] = 0
            self._threads.append(threading.Thread(target=self._client, name=name, daemon=True,
                                                  args=(name, self._fresh)))
        for t in self._threads:
            t.start()
        self.wall0 = time.time()
        self._go.set()
        return self

    def stop(self):
        """Let every client finish its request in flight and send no more."""
        if self.stopped_after is None and self.wall0 is not None:
            self.stopped_after = time.time() - self.wall0
        # The clients check this deadline before each request.
        self._end = time.monotonic()

    def join(self, timeout=TIMEOUT * 2, what=None):
        """Wait for every client to finish; fail naming the ones still
        running after `timeout` s (`what`: a callable adding context)."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        running = [t.name for t in self._threads if t.is_alive()]
        assert not running, (
            f"{len(running)} clients never finished: {self.summary()}"
            + (f"\n{what()}" if what else ""))
        return self

    def run(self, seconds, at=()):
        """start(), for `seconds` at most, with the actions `at`; join()."""
        self._end = time.monotonic() + seconds
        t0 = time.monotonic()
        self.start()
        for when, fn in at:
            # Pacing the actions within the load window, not a wait for
            # a condition.
            time.sleep(max(0.0, t0 + when - time.monotonic()))
            fn()
        return self.join(seconds + TIMEOUT * 2)

    # -- results --

    def total(self):
        return self.counts["keepalive"] + self.counts["fresh"]

    def summary(self):
        return (f"{self.total()} requests ({self.counts}), {len(self.failures)} failed, "
                f"by pid {self.served_by}, Connection: close per keep-alive client "
                f"{sorted(self.closes.values())}")

    # -- the clients --

    def _running(self):
        return time.monotonic() < self._end

    def _begin(self, name, conn_no, first):
        r = Request(name, conn_no, first, time.monotonic())
        self.requests.append(r)
        return r

    def _fail(self, r, what):
        if r.end is None:
            r.end = time.monotonic()
        r.error = what
        with self.lock:
            self.failures.append((r.client, what))

    def _check(self, resp):
        """What is wrong with `resp` (None if nothing)."""
        pid, slot = resp.headers.get("x-pid"), resp.headers.get("x-worker")
        if resp.status != 200:
            return f"status {resp.status} {resp.body[:100]!r}"
        if (pid is None or not pid.isdigit()
                or (self.body_prefix is not None and not resp.body.startswith(self.body_prefix))):
            return f"bad response: X-Pid {pid!r} body {resp.body[:100]!r}"
        if self.pool is not None and (slot is None or not slot.isdigit()
                                      or self.pool.get(int(slot)) != int(pid)):
            return f"X-Worker {slot} X-Pid {pid} is not in the pool {self.pool}"
        return None

    def _send(self, r, c, kind):
        """One request on connection `c` (None: open one first) for
        Request `r`; (connection, response if served else None)."""
        try:
            if c is None:
                c = HttpConn(self.port)
            resp = c.request()
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            self._fail(r, repr(e))
            return c, None
        r.end = time.monotonic()
        problem = self._check(resp)
        if problem is not None:
            self._fail(r, problem)
            return c, None
        r.pid, r.slot = int(resp.headers["x-pid"]), resp.headers.get("x-worker")
        with self.lock:
            self.counts[kind] += 1
            self.per_client[r.client] += 1
            self.served_by[r.pid] = self.served_by.get(r.pid, 0) + 1
        return c, resp

    def _client(self, name, body):
        self._go.wait()
        try:
            body(name)
        except Exception as e:  # noqa: BLE001 - a bug here must not pass silently
            with self.lock:
                self.failures.append((name, f"the client itself failed: {e!r}"))

    def _keepalive(self, name):
        conn_no = 0
        while self._running():
            conn_no += 1
            c, first = None, True
            try:
                while self._running():
                    c, resp = self._send(self._begin(name, conn_no, first), c, "keepalive")
                    first = False
                    if resp is None:
                        if self.until_close:
                            return
                        break  # failed: reconnect
                    if resp.headers.get("connection", "").lower() == "close":
                        with self.lock:
                            self.closes[name] += 1
                        if self.until_close:
                            try:
                                c.wait_eof()
                            except Exception as e:  # noqa: BLE001
                                with self.lock:
                                    self.failures.append(
                                        (name, f"no clean close after Connection: close: "
                                               f"{e!r}"))
                            return
                        break  # told to go: the next request opens a new connection
            finally:
                if c is not None:
                    c.close()

    def _fresh(self, name):
        conn_no = 0
        while self._running():
            conn_no += 1
            c, _ = self._send(self._begin(name, conn_no, True), None, "fresh")
            if c is not None:
                c.close()
