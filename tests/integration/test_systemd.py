"""forkpool under systemd: sd_notify messages and socket activation.

The notify socket is played by a datagram socket of the test (a path, or
an abstract '@' name), read by a thread that records every message with
its arrival time and the sender's pid (SCM_CREDENTIALS).  The master must
say READY=1 (with STATUS= and MAINPID=) only once every worker is ready,
RELOADING=1 then READY=1 around a rolling reload, STOPPING=1 when it
shuts down, and WATCHDOG=1 at half of WATCHDOG_USEC.

Socket activation uses Debian's systemd-socket-activate, which binds the
address and, at the first connection, sets LISTEN_FDS/LISTEN_PID and execs
forkpool in its own process.
"""

import collections
import http.client
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest

from fp.base import TIMEOUT, build_module, wait_for
from fp.logs import log_time
from fp.master import Master
from fp.net import EchoClient, free_port
from fp.proc import fd_inodes, kill_tree, listen_inodes, proc_stat, read_pid

# Variables of the outer world a test must not inherit by accident.
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                "LISTEN_PID", "LISTEN_FDNAMES")

Msg = collections.namedtuple("Msg", "time mono pid fields raw")


class NotifySocket:
    """A stand-in for systemd's notify socket.

    `address` is a path, or "@name" for the abstract namespace (as in
    NOTIFY_SOCKET).  A thread reads every datagram as it comes, so a
    sender never finds the queue full, and keeps them as Msg: wall and
    monotonic arrival time, the sender's pid, the KEY=VALUE fields.
    """

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        creds_size = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, creds_size)
            except socket.timeout:
                continue
            except OSError:
                return
            now, mono, pid = time.time(), time.monotonic(), None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:struct.calcsize("iII")])[0]
            fields = {}
            for line in data.decode(errors="replace").split("\n"):
                key, eq, value = line.partition("=")
                if eq:
                    fields[key] = value
            with self._lock:
                self.messages.append(Msg(now, mono, pid, fields, data))

    def all(self):
        with self._lock:
            return list(self.messages)

    def matching(self, key, value=None, after=None):
        """Messages with `key` (equal to `value` if given), in order,
        coming after message `after` (a Msg) if given."""
        msgs = self.all()
        if after is not None:
            msgs = msgs[msgs.index(after) + 1:]
        return [m for m in msgs if key in m.fields
                and (value is None or m.fields[key] == value)]

    def wait(self, key, value=None, after=None, count=1, timeout=TIMEOUT):
        """Wait for `count` such messages; return the last of them."""
        def check():
            found = self.matching(key, value, after)
            return found[count - 1] if len(found) >= count else None
        want = f"{key}={value}" if value is not None else key
        return wait_for(check, timeout, what=lambda: (
            f"{count} notify message(s) with {want}; got {[m.raw for m in self.all()]}"))

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class SdMaster(Master):
    """A Master started with extra environment variables, and optionally
    through a command that execs it (`prefix`, e.g. systemd-socket-activate),
    so that self.pid is still the master's pid once it has exec'd; and
    optionally with the test's socket `listen_fd` as its fd 3, as systemd
    passes one."""

    def __init__(self, binary, args, workdir, name, env=None, prefix=(), listen_fd=None):
        super().__init__(binary, args, workdir, name=name)
        self.env = dict(env or {})
        self.prefix = [str(a) for a in prefix]
        self.listen_fd = listen_fd

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
        env.update(self.env, FORKPOOL_CHAOS_HOOKS=self.hooks.path)
        with open(self.out.path, "wb") as out, open(self.err.path, "wb") as err:
            fd = self.listen_fd
            self.proc = subprocess.Popen(
                self.prefix + [self.binary] + self.args,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                start_new_session=True, close_fds=True,
                pass_fds=(3,) if fd is not None else (),
                preexec_fn=(lambda: os.dup2(fd, 3)) if fd is not None else None)
        self.pid = self.proc.pid
        return self


@pytest.fixture
def sd(forkpool_bin, tmp_path):
    """sd(*args, env={}, prefix=()) -> a started SdMaster.  Every one is
    SIGKILLed with its processes in teardown."""
    masters = []

    def start(*args, env=None, prefix=(), listen_fd=None):
        m = SdMaster(forkpool_bin, [str(a) for a in args], str(tmp_path),
                     name=f"forkpool{len(masters)}", env=env, prefix=prefix,
                     listen_fd=listen_fd)
        masters.append(m)
        return m.start()

    yield start
    for m in masters:
        m.kill_all()


@pytest.fixture
def notify_socket(tmp_path):
    """notify_socket(kind="path"|"abstract") -> a NotifySocket."""
    socks = []

    def make(kind="path"):
        if kind == "abstract":
            address = f"@forkpool-test-{uuid.uuid4().hex}"
        else:
            address = str(tmp_path / "notify.sock")
        s = NotifySocket(address)
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close()


SLOW_MODULE = r"""
#include <unistd.h>

#include <forkpool.h>

/* Worker 1 takes 800 ms to start: READY=1 must wait for it. */
static int slow_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	if (fpool_worker_id(w) == 1)
		usleep(800 * 1000);
	return 0;
}

static int slow_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	while (fpool_worker_is_running(w))
		usleep(10 * 1000);
	return 0;
}

static const struct fpool_worker_def slow = {
	.name = "slow",
	.on_start = slow_start,
	.main = slow_main,
};

FPOOL_WORKER_MODULE(slow);
"""


@pytest.fixture
def slow_module(tmp_path):
    return build_module(tmp_path, "slow", SLOW_MODULE)


def ready_line_time(m, slot, pid):
    found = m.find(rf"\bworker {slot} pid {pid} ready\b")
    assert found, f"no ready line for worker {slot} pid {pid}\n{m.describe()}"
    return log_time(found[0].string)


# ---------------------------------------------------------------------------
# sd_notify


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_once_every_worker_is_ready(sd, notify_socket, slow_module, kind):
    ns = notify_socket(kind)
    m = sd("-w", "3", "-k", slow_module, "-b", f"127.0.0.1:{free_port()}",
           env={"NOTIFY_SOCKET": ns.address})
    ready = ns.wait("READY", "1")
    pool = m.wait_pool(3)
    # Every worker, the slow one too, had said "ready" before READY=1
    # was sent (the log's times are taken before the master notifies).
    for slot, pid in pool.items():
        assert ready_line_time(m, slot, pid) <= ready.time, (
            f"READY=1 came before worker {slot} pid {pid} was ready\n{m.describe()}")
    assert ready.fields.get("STATUS") == "3/3 workers ready", ready.raw
    assert ready.fields.get("MAINPID") == str(m.pid), ready.raw
    assert ready.pid == m.pid, f"READY=1 sent by pid {ready.pid}, not the master {m.pid}"
    assert len(ns.matching("READY")) == 1, [x.raw for x in ns.all()]
    assert m.stop() == 0, m.describe()
    m.assert_tree_gone()


def test_stopping_at_sigterm(sd, notify_socket):
    ns = notify_socket()
    m = sd("-w", "2", "-k", "echo", "-b", f"127.0.0.1:{free_port()}",
           env={"NOTIFY_SOCKET": ns.address})
    ready = ns.wait("READY", "1")
    m.wait_pool(2)
    assert not ns.matching("STOPPING"), "STOPPING=1 before any stop was asked"
    m.signal(signal.SIGTERM)
    stopping = ns.wait("STOPPING", "1", after=ready)
    assert stopping.pid == m.pid
    assert m.wait_exit() == 0, m.describe()
    m.assert_tree_gone()


def test_watchdog_every_half_period(sd, notify_socket):
    ns = notify_socket()
    # 1 s: a keep-alive every 0.5 s, so only a stall of half a second (of
    # the master or of this test's receiver) could make one late.
    usec = 1000000
    m = sd("-w", "1", "-k", "echo", "-b", f"127.0.0.1:{free_port()}",
           env={"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": str(usec)})
    ns.wait("READY", "1")
    ns.wait("WATCHDOG", "1", count=7)
    pings = ns.matching("WATCHDOG", "1")
    assert all(p.pid == m.pid for p in pings), [p.pid for p in pings]
    gaps = sorted(b.mono - a.mono for a, b in zip(pings, pings[1:]))
    median = gaps[len(gaps) // 2]
    assert 0.4 <= median <= 0.6, f"keep-alives every {median:.3f} s, not ~0.5 s: {gaps}"
    # A gap of WATCHDOG_USEC would have had the service killed.
    assert gaps[-1] < usec / 1e6, f"a keep-alive came {gaps[-1]:.3f} s late: {gaps}"
    assert m.stop() == 0, m.describe()


def test_watchdog_for_this_pid_only(sd, notify_socket, forkpool_bin):
    ns = notify_socket()
    port = free_port()
    # WATCHDOG_PID names the master itself: the shell's pid is the
    # master's once it has exec'd.
    m = sd("-w", "1", "-k", "echo", "-b", f"127.0.0.1:{port}",
           env={"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "400000"},
           prefix=["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"'])
    ns.wait("WATCHDOG", "1", count=3)
    assert m.stop() == 0, m.describe()

    # WATCHDOG_PID names another process (as when the service manager
    # watches some other main pid): no keep-alive from us.
    ns2 = notify_socket("abstract")
    m2 = sd("-w", "1", "-k", "echo", "-b", f"127.0.0.1:{free_port()}",
            env={"NOTIFY_SOCKET": ns2.address, "WATCHDOG_USEC": "400000",
                 "WATCHDOG_PID": "1"})
    ready = ns2.wait("READY", "1")
    # Nothing must happen here: three periods are enough to tell.
    deadline = ready.mono + 0.6
    while time.monotonic() < deadline:
        assert not ns2.matching("WATCHDOG"), [x.raw for x in ns2.all()]
        time.sleep(0.05)
    assert m2.stop() == 0, m2.describe()


def test_reloading_then_ready_around_sighup(sd, notify_socket):
    ns = notify_socket()
    m = sd("-w", "2", "-k", "echo", "-b", f"127.0.0.1:{free_port()}",
           env={"NOTIFY_SOCKET": ns.address})
    first = ns.wait("READY", "1")
    old = m.wait_pool(2)
    m.signal(signal.SIGHUP)
    reloading = ns.wait("RELOADING", "1", after=first)
    usec = reloading.fields.get("MONOTONIC_USEC", "")
    assert usec.isdigit(), f"RELOADING=1 without MONOTONIC_USEC: {reloading.raw}"
    # CLOCK_MONOTONIC, the clock of time.monotonic() on Linux.
    assert abs(int(usec) / 1e6 - reloading.mono) < 5, (usec, reloading.mono)
    again = ns.wait("READY", "1", after=reloading)
    m.wait_log(r"reload complete")
    new = m.wait_pool(2)
    for slot, pid in new.items():
        assert pid != old[slot], f"worker {slot} was not replaced"
        assert ready_line_time(m, slot, pid) <= again.time, (
            f"READY=1 came before the replacement {pid} was ready\n{m.describe()}")
    assert reloading.pid == m.pid and again.pid == m.pid
    assert m.stop() == 0, m.describe()


def test_unreachable_notify_socket_is_only_a_warning(sd, tmp_path):
    # Nobody listens there: every message fails, the pool serves on, and
    # the log says so once (then only at debug level).
    m = sd("-w", "2", "-k", "echo", "-b", f"127.0.0.1:{free_port()}",
           "--log-level", "debug",
           env={"NOTIFY_SOCKET": str(tmp_path / "nobody.sock"),
                "WATCHDOG_USEC": "200000"})
    m.wait_pool(2)
    m.wait_log(r"debug master: systemd: cannot send WATCHDOG=1", count=3)
    warnings = m.find(r"warning master: systemd: cannot send")
    assert len(warnings) == 1, m.describe()
    assert m.stop() == 0, m.describe()
    m.assert_tree_gone()


def test_mainpid_is_the_daemon(forkpool_bin, notify_socket, tmp_path):
    ns = notify_socket()
    pidfile = tmp_path / "forkpool.pid"
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
    env["NOTIFY_SOCKET"] = ns.address
    proc = subprocess.Popen(
        [forkpool_bin, "-D", "--pidfile", str(pidfile), "--log-file", str(log),
         "-w", "2", "-k", "echo", "-b", f"127.0.0.1:{free_port()}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, start_new_session=True)
    daemon = None
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err.decode(errors="replace")
        daemon = wait_for(lambda: read_pid(pidfile), what="the pidfile")
        ready = ns.wait("READY", "1")
        assert daemon != proc.pid
        assert ready.fields.get("MAINPID") == str(daemon), ready.raw
        assert ready.pid == daemon, f"READY=1 sent by {ready.pid}, not the daemon {daemon}"
        os.kill(daemon, signal.SIGTERM)
        ns.wait("STOPPING", "1", after=ready)
        wait_for(lambda: proc_stat(daemon) is None, what="the daemon to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        daemon = daemon or read_pid(pidfile)
        if daemon is not None:
            kill_tree(daemon)


# ---------------------------------------------------------------------------
# Socket activation


@pytest.fixture
def socket_activate():
    for path in (shutil.which("systemd-socket-activate"),
                 "/usr/bin/systemd-socket-activate",
                 "/lib/systemd/systemd-socket-activate"):
        if path and os.access(path, os.X_OK):
            return path
    pytest.skip("systemd-socket-activate not found (Debian package systemd; "
                "scripts/bootstrap installs it)")


def http_get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    finally:
        conn.close()


def poke(address):
    """Connect once: systemd-socket-activate starts its program only at
    the first connection, as a socket unit would."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET

    def connect():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            try:
                s.connect(address)
            except (ConnectionRefusedError, FileNotFoundError):
                return False  # not listening yet
            except ConnectionResetError:
                pass  # it listened, and forkpool closed it (unmatched)
            return True
    wait_for(connect, what=f"systemd-socket-activate to listen on {address}")


def wait_exec(m):
    """Wait until the activator has exec'd forkpool in its process."""
    wait_for(lambda: getattr(proc_stat(m.pid), "comm", None) == "forkpool",
             what=lambda: f"forkpool to run in pid {m.pid}\n{m.describe()}")


def assert_served_by_workers(m, port, pool, requests=6):
    for _ in range(requests):
        status, headers = http_get(port)
        assert status == 200
        pid = int(headers["X-Pid"])
        assert pid in pool.values(), f"served by {pid}, not a worker of {pool}"
        assert proc_stat(pid).ppid == m.pid


def activated_inode(m):
    """Inode of the socket systemd-socket-activate passed as fd 3."""
    inode = fd_inodes(m.pid).get(3)
    assert inode, f"the master has no socket on fd 3\n{m.describe()}"
    return inode


def test_socket_activation_without_bind(sd, socket_activate):
    port = free_port()
    m = sd("-w", "2", "-k", "http",
           prefix=[socket_activate, "-l", f"127.0.0.1:{port}"])
    poke(("127.0.0.1", port))
    wait_exec(m)
    pool = m.wait_pool(2)
    assert_served_by_workers(m, port, pool)
    # The activated socket is the one listening; nothing else was bound
    # (not the default 127.0.0.1:8080 either).
    assert listen_inodes(port) == {activated_inode(m)}
    assert not m.find(r"127\.0\.0\.1:8080\b"), m.describe()
    assert m.stop() == 0, m.describe()
    m.assert_tree_gone()


def test_a_passed_socket_is_left_queueing_for_the_next_instance(sd):
    """A socket systemd passes in is systemd's: when the pool stops, it
    must go on queueing connections for the next start of the service
    (unlike a listener the master made, which takes no new connection
    once a stop begins).  Here the test holds the other copy."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        port = ls.getsockname()[1]
        m = sd("-w", "1", "-k", "echo", env={"LISTEN_FDS": "1"},
               prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'], listen_fd=ls.fileno())
        m.wait_pool(1)
        with EchoClient(("127.0.0.1", port)) as c:
            assert c.echo(b"through the passed socket\n")
        assert m.stop() == 0, m.describe()
        m.assert_tree_gone()
        # The next instance's connection: queued, and ours to accept.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as c:
            ls.settimeout(TIMEOUT)
            conn, _ = ls.accept()
            with conn:
                c.sendall(b"x")
                assert conn.recv(1) == b"x"


def test_socket_activation_matches_bind(sd, socket_activate):
    port = free_port()
    m = sd("-w", "2", "-k", "http", "--bind", f"127.0.0.1:{port}",
           prefix=[socket_activate, "-l", f"127.0.0.1:{port}"])
    poke(("127.0.0.1", port))
    wait_exec(m)
    pool = m.wait_pool(2)
    assert not m.find(r"(?i)in use"), m.describe()
    assert_served_by_workers(m, port, pool)
    assert listen_inodes(port) == {activated_inode(m)}
    assert m.stop() == 0, m.describe()
    m.assert_tree_gone()


def test_socket_activation_unmatched_fd_is_closed(sd, socket_activate):
    activated, bound = free_port(), free_port()
    m = sd("-w", "1", "-k", "http", "--bind", f"127.0.0.1:{bound}",
           prefix=[socket_activate, "-l", f"127.0.0.1:{activated}"])
    poke(("127.0.0.1", activated))
    wait_exec(m)
    pool = m.wait_pool(1)
    assert_served_by_workers(m, bound, pool, requests=2)
    m.wait_log(rf"warning master: .*127\.0\.0\.1:{activated}\b")
    assert not listen_inodes(activated), "the unmatched activated socket still listens"
    assert m.stop() == 0, m.describe()


def test_socket_activation_unix_socket_is_left_to_systemd(sd, socket_activate, tmp_path):
    path = tmp_path / "echo.sock"
    m = sd("-w", "2", "-k", "echo", "--bind", f"unix:{path}",
           prefix=[socket_activate, "-l", str(path)])
    poke(str(path))
    wait_exec(m)
    m.wait_pool(2)
    with EchoClient(str(path)) as c:
        c.echo(b"activated\n")
    assert m.stop() == 0, m.describe()
    # The socket file belongs to whoever made it (systemd): forkpool
    # did not bind it, so it must not remove it.
    assert path.is_socket(), "forkpool removed a socket file it did not create"
