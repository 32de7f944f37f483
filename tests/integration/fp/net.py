"""Sockets: ports picked at run time, client connections, and the echo
checks the pool-mechanics tests use."""

import errno
import os
import random
import selectors
import signal
import socket
import time

from fp.base import POLL, TIMEOUT, wait_for
from fp.proc import owner_of_socket, server_side_inode

_ports_given = set()
_port_rng = random.Random()


def _ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Drawn below the kernel's ephemeral range, so that no connect() or
    bind(("", 0)) anywhere (the tests' own load clients open thousands of
    connections) can take it before the master binds it, and never the
    same port twice in one run.
    """
    low = _ephemeral_low()
    for _ in range(200 if low > 11000 else 0):
        port = _port_rng.randrange(10000, low)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    """True if a fresh listener can take the port.

    SO_REUSEADDR only tolerates TIME_WAIT leftovers; no SO_REUSEPORT, so any
    socket still bound or listening there (an orphan worker's listener, say)
    makes this fail.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def recv_to_eof(sock):
    """Everything sock receives until the peer closes (its timeout
    applies to each read)."""
    data = b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return data
        data += chunk


class Conn:
    """A client connection (self.sock, unread bytes in self.buf), closed
    when a with block ends."""

    sock = None
    buf = b""

    def wait_eof(self):
        """Wait for a clean close: EOF with nothing more sent.  A reset
        raises ConnectionResetError."""
        assert not self.buf, f"unexpected bytes after the last reply: {self.buf[:200]!r}"
        data = self.sock.recv(65536)
        assert data == b"", f"unexpected bytes instead of EOF: {data[:200]!r}"

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EchoClient(Conn):
    """One connection to an echo server; address is (host, port) or a path."""

    def __init__(self, address, timeout=TIMEOUT):
        if isinstance(address, str):
            family = socket.AF_UNIX
        elif ":" in address[0]:
            family = socket.AF_INET6
        else:
            family = socket.AF_INET
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def echo(self, data, timeout=TIMEOUT):
        """Send `data` while reading; return what came back (must be all)."""
        got = bytearray()
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while len(got) < len(data):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"echo timed out: sent {len(data) - len(view)} of {len(data)} "
                        f"bytes, got {len(got)} back")
                for _key, mask in sel.select(min(left, 0.5)):
                    if mask & selectors.EVENT_READ:
                        chunk = self.sock.recv(65536)
                        if not chunk:
                            raise ConnectionError(
                                f"connection closed after {len(got)} of {len(data)} bytes")
                        got += chunk
                    if mask & selectors.EVENT_WRITE and len(view):
                        n = self.sock.send(view[:65536])
                        view = view[n:]
                        if not len(view):
                            sel.modify(self.sock, selectors.EVENT_READ)
        assert bytes(got) == bytes(data), "echo returned different bytes"
        return bytes(got)

    def is_closed_by_peer(self):
        """True if the server closed or reset the connection (non-blocking)."""
        try:
            return self.sock.recv(65536) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def wait_closed(self, timeout=TIMEOUT):
        wait_for(self.is_closed_by_peer, timeout, what="the server to close the connection")


def echo_roundtrip(address, payload=b"hello forkpool\n", timeout=TIMEOUT):
    with EchoClient(address, timeout) as c:
        return c.echo(payload, timeout) == payload


def not_served(address, wait=0.5):
    """True if a new connection to `address` gets no echo within `wait` s.

    Refused, reset, closed or silent all count as "not served".  This is
    the one place a test must watch for something *not* happening, so it
    needs a window; keep it short.
    """
    try:
        c = EchoClient(address, timeout=wait)
    except (ConnectionRefusedError, ConnectionResetError, socket.timeout, FileNotFoundError):
        return True
    with c:
        try:
            c.sock.send(b"ping")
        except (BrokenPipeError, ConnectionResetError):
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                time.sleep(POLL)
                continue
            except ConnectionResetError:
                return True
            return data == b""
        return True


def assert_serves_alone(master, pid, connections=2):
    """Prove that worker `pid` itself accepts and echoes.

    Echo does not say who answered, so every other worker is stopped
    (SIGSTOP) for a moment: only `pid` can accept from the shared
    listener, and /proc says which process holds the accepted socket.
    """
    workers = master.children()
    assert pid in workers, f"pid {pid} is not a live worker"
    others = [p for p in workers if p != pid]
    for p in others:
        os.kill(p, signal.SIGSTOP)
    try:
        for i in range(connections):
            with EchoClient(("127.0.0.1", master.port)) as c:
                c.echo(f"to pid {pid}, #{i}\n".encode())
                inode = wait_for(lambda: server_side_inode(c.sock, master.port),
                                 what="the accepted socket in /proc/net/tcp")
                owner = owner_of_socket(inode, workers)
                assert owner == pid, f"connection served by {owner}, not by {pid}"
    finally:
        for p in others:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
