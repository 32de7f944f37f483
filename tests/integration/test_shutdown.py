"""Shutting down: SIGTERM/SIGQUIT drain, SIGINT interrupts, stragglers are
SIGKILLed after --graceful-timeout, the master's death stops the workers,
and the signals that are not "stop" leave the master running."""

import os
import signal
import socket
import subprocess
import time

import pytest

from fp.base import TIMEOUT, wait_for
from fp.net import EchoClient, echo_roundtrip, not_served, port_is_free
from fp.proc import is_alive

BLOCKING = {"event": [], "blocking": ["--blocking"]}


def wait_in_main(m, pool):
    """Wait until every chaos worker of `pool` is inside its main."""
    for slot, pid in pool.items():
        m.wait_out(rf"chaos worker {slot} pid {pid}: main$")


@pytest.mark.parametrize("style", ["event", "blocking"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["TERM", "QUIT"])
def test_graceful_stop(forkpool, chaos, sig, style):
    m = forkpool("-w", "3", "-k", chaos, "--graceful-timeout", "10", "--", *BLOCKING[style])
    pool = m.wait_pool(3)
    wait_in_main(m, pool)
    t0 = time.monotonic()
    assert m.stop(sig) == 0
    elapsed = time.monotonic() - t0
    m.assert_tree_gone()
    for slot, pid in pool.items():
        stop = m.wait_out(rf"chaos worker {slot} pid {pid}: on_stop$", need_alive=False).string
        done = m.wait_out(rf"chaos worker {slot} pid {pid}: on_shutdown$", need_alive=False).string
        lines = m.output_lines()
        assert lines.index(stop) < lines.index(done)
        assert not m.find(rf"chaos worker {slot} pid {pid}: main cancelled", "out")
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b", need_alive=False)
    m.wait_log(r"shutdown complete", need_alive=False)
    assert not m.find(r"did not stop within"), "a willing worker was treated as a straggler"
    assert elapsed < 10, f"stopping took {elapsed:.1f} s, the graceful timeout (nobody lingered)"


def test_sigterm_drains_a_connected_client(forkpool):
    m = forkpool("-w", "1", "--graceful-timeout", "30")
    m.wait_pool(1)
    addr = ("127.0.0.1", m.port)
    with EchoClient(addr) as c:
        c.echo(b"before the signal\n")
        m.signal(signal.SIGTERM)
        # The master waits for the worker, which serves its open connection
        # until the client leaves.  Watching for "does not exit" needs a
        # window; one second is plenty for the signal to be handled.
        with pytest.raises(subprocess.TimeoutExpired):
            m.proc.wait(1.0)
        for i in range(5):
            c.echo(f"after the signal #{i}\n".encode())
        assert not_served(addr), "a new connection was served after SIGTERM"
        assert m.alive()
        t_close = time.monotonic()
    rc = m.wait_exit(20)
    assert rc == 0
    assert time.monotonic() - t_close < 10, "the master waited for the timeout, not the client"
    m.wait_log(r"shutdown complete", need_alive=False)
    m.assert_tree_gone()


def test_graceful_timeout_cuts_an_idle_client(forkpool):
    m = forkpool("-w", "1", "--graceful-timeout", "1")
    m.wait_pool(1)
    with EchoClient(("127.0.0.1", m.port)) as c:
        c.echo(b"hello\n")
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        c.wait_closed(timeout=20)
        cut = time.monotonic() - t0
    assert m.wait_exit(20) == 0
    assert cut >= 0.9, f"the client was cut after {cut:.2f} s, before --graceful-timeout 1"
    m.assert_tree_gone()


@pytest.mark.parametrize("style", ["event", "blocking"])
def test_sigint_cancels_main(forkpool, chaos, style):
    m = forkpool("-w", "2", "-k", chaos, "--graceful-timeout", "30", "--", *BLOCKING[style])
    pool = m.wait_pool(2)
    wait_in_main(m, pool)
    t0 = time.monotonic()
    assert m.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 10
    m.assert_tree_gone()
    for slot, pid in pool.items():
        cancelled = m.wait_out(rf"chaos worker {slot} pid {pid}: main cancelled$",
                               need_alive=False).string
        done = m.wait_out(rf"chaos worker {slot} pid {pid}: on_shutdown$",
                          need_alive=False).string
        lines = m.output_lines()
        assert lines.index(cancelled) < lines.index(done)
        assert not m.find(rf"chaos worker {slot} pid {pid}: main returned$", "out")
    m.wait_log(r"shutdown complete", need_alive=False)


def test_sigint_cuts_connected_clients_at_once(forkpool):
    m = forkpool("-w", "2", "--graceful-timeout", "30")
    m.wait_pool(2)
    clients = [EchoClient(("127.0.0.1", m.port)) for _ in range(4)]
    try:
        for c in clients:
            c.echo(b"hi\n")
        t0 = time.monotonic()
        m.signal(signal.SIGINT)
        for c in clients:
            c.wait_closed(timeout=10)
        assert m.wait_exit(10) == 0
        assert time.monotonic() - t0 < 10
    finally:
        for c in clients:
            c.close()
    m.assert_tree_gone()


def test_worker_ignoring_sigterm_is_killed_after_graceful_timeout(forkpool, chaos):
    m = forkpool("-w", "2", "-k", chaos, "--graceful-timeout", "1", "--", "--ignore-term")
    pool = m.wait_pool(2)
    wait_in_main(m, pool)
    t0 = time.monotonic()
    assert m.stop(signal.SIGTERM) == 0
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9, f"the master gave up after {elapsed:.2f} s, not --graceful-timeout 1"
    m.assert_tree_gone()
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} did not stop within .*sending SIGKILL",
                   need_alive=False)
        m.wait_log(rf"worker {slot} pid {pid} killed by SIGKILL", need_alive=False)
    m.wait_log(r"shutdown complete", need_alive=False)


def test_a_stopping_pool_queues_no_new_connection(forkpool, chaos):
    """Once the master is told to stop, its TCP listener takes no new
    connection, although a worker still holds it open: a connection the
    kernel queued there now would be reset when the last worker closes
    it, having never been answered.  The connect goes unanswered instead
    (and is refused once the listener is closed)."""
    m = forkpool("-w", "1", "-k", chaos, "--graceful-timeout", str(TIMEOUT), "--",
                 "--ignore-term")
    pool = m.wait_pool(1)
    wait_in_main(m, pool)
    # Before the stop the kernel completes a connection into the queue
    # (nobody accepts: the chaos worker serves nothing).
    socket.create_connection(("127.0.0.1", m.port), timeout=TIMEOUT).close()
    m.signal(signal.SIGTERM)
    m.wait_log(r"shutting down \(graceful\): 1 workers$")
    assert is_alive(pool[0]), "the worker ignoring SIGTERM is gone already"
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", m.port))
        except (socket.timeout, ConnectionRefusedError):
            pass
        else:
            raise AssertionError("a stopping pool queued a new connection")


def _kill_master(m):
    os.kill(m.pid, signal.SIGKILL)
    m.proc.wait(10)  # the test is its parent: reap it at once
    return time.monotonic()


def test_master_sigkill_stops_every_worker_and_frees_the_port(forkpool):
    m = forkpool("-w", "3", "--graceful-timeout", "3")
    pool = m.wait_pool(3)
    t0 = _kill_master(m)
    wait_for(lambda: not any(is_alive(p) for p in pool.values()), timeout=3 + 10,
             what="every orphaned worker to exit")
    assert time.monotonic() - t0 < 3 + 5, "orphans outlived the graceful timeout"
    m.assert_tree_gone()
    assert port_is_free(m.port), "an orphan still holds the port"
    # And a new master can take over the port.
    again = forkpool("-w", "1", port=m.port)
    again.wait_pool(1)
    assert echo_roundtrip(("127.0.0.1", m.port))


def test_master_sigkill_stops_workers_gracefully(forkpool, chaos):
    m = forkpool("-w", "2", "-k", chaos, "--graceful-timeout", "5")
    pool = m.wait_pool(2)
    wait_in_main(m, pool)
    _kill_master(m)
    for slot, pid in pool.items():
        m.wait_out(rf"chaos worker {slot} pid {pid}: on_stop$", need_alive=False)
        m.wait_out(rf"chaos worker {slot} pid {pid}: on_shutdown$", need_alive=False)
    wait_for(lambda: not any(is_alive(p) for p in pool.values()), timeout=5 + 10,
             what="every orphaned worker to exit")
    m.assert_tree_gone()


def test_master_sigkill_drains_then_cuts_a_client(forkpool):
    m = forkpool("-w", "1", "--graceful-timeout", "3")
    pid = m.wait_pool(1)[0]
    with EchoClient(("127.0.0.1", m.port)) as c:
        c.echo(b"hello\n")
        t0 = _kill_master(m)
        # Orphaned, the worker stops gracefully: the open connection is
        # still served...
        c.echo(b"still there?\n")
        # ...until the graceful timeout, which the worker now enforces itself.
        c.wait_closed(timeout=3 + 10)
    wait_for(lambda: not is_alive(pid), timeout=10, what="the orphaned worker to exit")
    assert time.monotonic() - t0 < 3 + 5, "the orphan outlived its graceful timeout"
    m.assert_tree_gone()
    assert port_is_free(m.port)


# Sizes after the signal, for a pool started with 2 workers, and what the
# master logs once it has handled it (a HUP: once the reload is over).
HARMLESS = [
    (signal.SIGHUP, 2, r"\breload complete$"),
    (signal.SIGUSR1, 2, r"\bSIGUSR1: log files reopened$"),
    (signal.SIGTTIN, 3, r"\bSIGTTIN: added worker 2 \(3 now\)$"),
    (signal.SIGTTOU, 1, r"\bSIGTTOU: removing worker 1 \(1 left\)$"),
]


@pytest.mark.parametrize("sig,size,handled", HARMLESS, ids=[s.name for s, _, _ in HARMLESS])
def test_other_signals_do_not_kill_the_master(forkpool, sig, size, handled):
    m = forkpool("-w", "2")
    m.wait_pool(2)
    m.signal(sig)
    m.wait_log(handled)
    pool = m.wait_pool(size)
    # And the master runs on: a worker killed afterwards is replaced.
    slot, old = sorted(pool.items())[0]
    os.kill(old, signal.SIGKILL)
    m.wait_respawn(slot, old)
    pool = m.wait_pool(size)
    assert m.alive(), f"the master did not survive {sig.name}\n{m.describe()}"
    assert echo_roundtrip(("127.0.0.1", m.port))
    assert m.stop() == 0
    m.assert_tree_gone()


def test_ttin_ttou_grow_and_shrink_never_below_one(forkpool):
    m = forkpool("-w", "1")
    m.wait_pool(1)
    # One signal at a time, each handled (logged) before the next: two
    # pending signals of one kind would merge into one.
    m.signal(signal.SIGTTIN)
    m.wait_log(r"\bSIGTTIN: added worker 1 \(2 now\)$")
    m.wait_pool(2)
    m.signal(signal.SIGTTIN)
    m.wait_log(r"\bSIGTTIN: added worker 2 \(3 now\)$")
    pool = m.wait_pool(3)
    assert sorted(pool) == [0, 1, 2]
    m.signal(signal.SIGTTOU)
    m.wait_log(r"\bSIGTTOU: removing worker 2 \(2 left\)$")
    m.wait_pool(2)
    m.signal(signal.SIGTTOU)
    m.wait_log(r"\bSIGTTOU: removing worker 1 \(1 left\)$")
    pool = m.wait_pool(1)
    # The last worker stays: the master says so, and keeps it.
    m.signal(signal.SIGTTOU)
    m.wait_log(r"\bSIGTTOU: not removing worker 0: it is the last one$")
    assert m.wait_pool(1) == pool
    assert not m.find(r"\bSIGTTOU: removing worker 0\b"), m.describe()
    slot, old = next(iter(pool.items()))
    os.kill(old, signal.SIGKILL)
    m.wait_respawn(slot, old)
    m.wait_pool(1)
    assert m.alive()
    assert echo_roundtrip(("127.0.0.1", m.port))
