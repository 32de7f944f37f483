"""The built-in echo worker (workers/echo.c): accepting through forkpool's
acceptor when out of file descriptors, and its --idle-timeout."""

import resource
import signal
import socket
import time

import pytest

from fp.base import TIMEOUT, report, wait_for
from fp.master import accept_runs
from fp.net import EchoClient
from fp.proc import cpu_share, fd_table, server_side_inode

# What counts as "not spinning": a worker that retries a failing accept()
# every 100 ms uses well under 1 % of a core; one that spins uses all of it.
MAX_CPU_SHARE = 0.2
CPU_WINDOW = 2.0  # s over which the worker's CPU use is measured


def leave_fds(pid, spare):
    """Lower RLIMIT_NOFILE of `pid` so that it can open only a few more
    descriptors: `spare` above its highest one, plus the holes below it.
    Returns how many it can open."""
    fds = fd_table(pid)
    assert fds, f"no fds for pid {pid}"
    limit = max(fds) + 1 + spare
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    return limit - len(fds)


def test_out_of_fds_pauses_accepting_instead_of_spinning(forkpool, capsys):
    m = forkpool("-w", "1", "-k", "echo")
    pid = m.wait_pool(1)[0]
    addr = ("127.0.0.1", m.port)
    held = []
    try:
        for i in range(leave_fds(pid, 2)):
            held.append(EchoClient(addr))
            held[-1].echo(f"held {i}\n".encode())
        # Queued in the listener: the worker has no descriptor for it.
        extra = EchoClient(addr)
        held.append(extra)
        m.wait_log(rf"worker 0 pid {pid}: .*accept.* failed")
        used = cpu_share(pid, CPU_WINDOW)
        report(capsys, f"echo worker out of fds: {used * 100:.1f} % of a core over "
               f"{CPU_WINDOW:g} s")
        assert used < MAX_CPU_SHARE, (
            f"the worker used {used * 100:.0f} % of a core while out of fds\n{m.describe()}")
        assert accept_runs(m, pid) == ["pause"], m.describe()
        # The held connections close: the queued one is served, so is a
        # new one, and the end of the run is logged once.
        for c in held[:-1]:
            c.close()
        extra.echo(b"was queued\n")
        m.wait_log(rf"worker 0 pid {pid}: accepting on \S+ again after")
        with EchoClient(addr) as c:
            c.echo(b"new\n")
        # One line when the run began, one when it ended.  (The accept
        # that takes the last free descriptor can be followed by one that
        # fails, with nothing queued: Linux allocates the descriptor
        # before it looks at the queue.  That is a run of its own.)
        assert accept_runs(m, pid)[:2] == ["pause", "resume"], m.describe()
    finally:
        for c in held:
            c.close()


def test_idle_connection_is_closed_and_a_busy_one_is_not(forkpool):
    m = forkpool("-w", "1", "-k", "echo", "--", "--idle-timeout", "1s")
    m.wait_pool(1)
    addr = ("127.0.0.1", m.port)
    with EchoClient(addr) as silent:
        t0 = time.monotonic()
        silent.wait_closed(timeout=1 + TIMEOUT)
        waited = time.monotonic() - t0
        # The worker's clock starts at its accept, after connect() returned.
        assert waited >= 0.9, f"closed after {waited:.3f} s, before the 1 s idle timeout"
    with EchoClient(addr) as busy:
        # Three timeouts long, a byte every 0.3 s: never idle for 1 s.
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            busy.echo(b"still here\n")
            time.sleep(0.3)  # pacing the client
        busy.echo(b"and still open\n")


def test_client_that_reads_nothing_is_closed(forkpool):
    """A client that sends but reads none of its echo: the worker stops
    reading it (its echo waits), and closes it once nothing could be
    written for the idle timeout; it was not idle, since output waited."""
    m = forkpool("-w", "1", "-k", "echo", "--", "--idle-timeout", "1s")
    m.wait_pool(1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", m.port))
        inode = wait_for(lambda: server_side_inode(s, m.port), what="the worker to accept")
        s.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < 64 << 20:  # more than any buffer on the way
                sent += s.send(chunk)
        except BlockingIOError:
            pass  # the worker stopped reading: its echo waits for us
        except (ConnectionResetError, BrokenPipeError):
            pass  # already closed
        wait_for(lambda: server_side_inode(s, m.port) != inode,
                 what=lambda: f"the worker to close a client that reads nothing\n{m.describe()}")
    assert m.alive()


def test_idle_timeout_bounds_a_graceful_stop(forkpool):
    """SIGTERM keeps open connections served until their clients close
    them; an idle one is closed by the idle timeout, well before the
    graceful timeout would kill the worker."""
    m = forkpool("-w", "1", "-k", "echo", "--graceful-timeout", "60", "--",
                 "--idle-timeout=1.5s")
    pid = m.wait_pool(1)[0]
    with EchoClient(("127.0.0.1", m.port)) as c:
        c.echo(b"hello\n")
        m.signal(signal.SIGTERM)
        c.wait_closed()
    assert m.wait_exit() == 0
    m.wait_log(rf"worker 0 pid {pid} exited with status 0\b", need_alive=False)
    assert not m.find(r"SIGKILL"), m.describe()


@pytest.mark.parametrize("args, why", [
    (["--idle-timeout", "soon"], r"--idle-timeout 'soon': not a duration"),
    (["--idle-timeout", "0"], r"--idle-timeout '0': out of range"),
    (["--idle-timeout", "-5"], r"--idle-timeout '-5': "),
    (["--idle-timeout=8d"], r"--idle-timeout '8d': "),
    (["--idle-timeout"], r"--idle-timeout needs a value"),
    (["--idle"], r"unknown worker argument '--idle'"),
], ids=["word", "zero", "negative", "unit", "missing", "unknown"])
def test_bad_worker_argument_fails_the_start(forkpool, args, why):
    m = forkpool("-w", "1", "-k", "echo", "--", *args)
    first = m.wait_log(rf"worker 0 pid (\d+): echo: {why}")
    pid = int(first.group(1))
    m.wait_log(rf"worker 0 pid {pid} exited with status 3\b")
    # One line says what is wrong; the library adds that the start failed.
    assert len(m.find(rf"worker 0 pid {pid}: echo: ")) == 1, m.describe()
    assert not m.find(r"worker 0 pid \d+ ready"), m.describe()
