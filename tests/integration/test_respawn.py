"""Respawn: a dead worker is replaced in the same slot at once, whatever
killed it, over and over, without zombies; a hung worker is killed; a
signal storm on newborn workers does not reach the master."""

import os
import signal
import time

import pytest

from fp.base import wait_for
from fp.logs import log_time
from fp.net import assert_serves_alone, echo_roundtrip
from fp.proc import is_alive

# Kills in a loop must measure respawn, not the restart policy: a worker
# killed before --min-uptime counts as a failed start and is backed off.
# So the pool runs with a small --min-uptime and each victim is first let
# live a little longer than that (Master.wait_uptime).
MIN_UPTIME = "10ms"
MATURE = 0.03

BLOCKING = {"event": [], "blocking": ["--blocking"]}


def test_sigkilled_worker_is_replaced_in_its_slot(forkpool):
    m = forkpool("-w", "2")
    pool = m.wait_pool(2)
    old = pool[0]
    os.kill(old, signal.SIGKILL)
    new = m.wait_respawn(0, old)
    assert new != old
    m.wait_log(rf"worker 0 pid {old} killed by SIGKILL")
    after = m.wait_pool(2)
    assert after == {0: new, 1: pool[1]}, "the other slot was disturbed"
    m.wait_no_zombies()
    assert_serves_alone(m, new)


def test_fifty_kills_in_a_row(forkpool):
    m = forkpool("-w", "3", "--min-uptime", MIN_UPTIME)
    pool = m.wait_pool(3)
    most_children = 0
    for i in range(50):
        slot = i % 3
        old = pool[slot]
        m.wait_uptime(old, MATURE)
        os.kill(old, signal.SIGKILL)

        def respawned():
            nonlocal most_children
            kids = m.children()
            most_children = max(most_children, len(kids))
            return m.pool_state(3) if m.ready_workers().get(slot) != old else None
        pool = wait_for(respawned, what=lambda: f"slot {slot} respawned\n{m.describe()}")
        assert pool[slot] != old
        assert not is_alive(old)
        m.wait_no_zombies()
    assert most_children <= 3, f"saw {most_children} live children of a 3-worker pool"
    assert len(m.find(r"killed by SIGKILL")) >= 50
    assert m.alive()
    assert m.children() == set(pool.values())
    assert echo_roundtrip(("127.0.0.1", m.port))
    assert m.stop() == 0
    m.assert_tree_gone()


@pytest.mark.parametrize("code,style", [(0, "event"), (7, "blocking")])
def test_worker_returning_from_main_is_respawned(forkpool, chaos, code, style):
    m = forkpool("-w", "1", "-k", chaos, "--",
                 "--exit-after", "300", "--exit-code", str(code), *BLOCKING[style])
    # The worker lives 300 ms: follow it through the log, not /proc.
    pid = int(m.wait_log(r"worker 0 pid (\d+) ready").group(1))
    m.wait_log(rf"worker 0 pid {pid} exited with status {code}\b")
    new = m.wait_respawn(0, pid, require_alive=False)
    assert new != pid
    out = [m.wait_out(rf"chaos worker 0 pid {pid}: {hook}$").string
           for hook in ("on_start", "main", "main returned", "on_shutdown")]
    lines = m.output_lines()
    assert [lines.index(l) for l in out] == sorted(lines.index(l) for l in out), (
        f"hooks of pid {pid} out of order:\n{m.out.tail()}")


def test_crashed_worker_is_respawned(forkpool, chaos):
    m = forkpool("-w", "2", "-k", chaos, "--", "--crash-after", "300")
    for slot in (0, 1):
        pid = int(m.wait_log(rf"worker {slot} pid (\d+) ready").group(1))
        m.wait_log(rf"worker {slot} pid {pid} killed by SIGABRT")
        m.wait_respawn(slot, pid, require_alive=False)
    assert m.alive()


def test_failed_start_is_retried_and_master_survives(forkpool, chaos):
    m = forkpool("-w", "1", "-k", chaos, "--", "--fail-start")
    first = m.wait_log(r"worker 0 pid (\d+) exited with status 3\b")
    pid = int(first.group(1))
    second = m.wait_log(r"worker 0 pid (\d+) started", count=2)
    assert int(second.group(1)) != pid
    assert not m.find(r"worker 0 pid \d+ ready"), "a worker whose on_start failed said ready"
    assert m.alive()


def test_crash_loop_is_backed_off(forkpool, chaos):
    # DESIGN.md, restart policy: after k consecutive failed starts the next
    # spawn waits nothing for k <= 2, then 100 ms * 2^(k-3).  The master's
    # own timestamps tell how long it waited.
    m = forkpool("-w", "1", "-k", chaos, "--", "--fail-start")
    m.wait_log(r"worker 0 pid \d+ started", count=6)
    starts = [log_time(x.string) for x in m.find(r"worker 0 pid \d+ started")]
    exits = [log_time(x.string) for x in m.find(r"worker 0 pid \d+ exited with status 3")]
    for k in (3, 4, 5):
        # exits[k-1] is the k-th failure; starts[k] is the spawn after it.
        waited = starts[k] - exits[k - 1]
        want = 0.1 * 2 ** (k - 3)
        assert waited >= want * 0.9, (
            f"after {k} failed starts the master waited {waited:.3f} s, expected >= {want} s\n"
            f"{m.describe()}")
    assert m.alive()


@pytest.mark.parametrize("style", ["event", "blocking"])
def test_hung_worker_is_killed_and_replaced(forkpool, chaos, style):
    m = forkpool("-w", "1", "-k", chaos, "--worker-timeout", "1", "--check-interval", "0.2",
                 "--", "--hang-after", "300", *BLOCKING[style])
    pid = m.wait_pool(1)[0]
    ready_line = m.wait_log(rf"worker 0 pid {pid} ready").string
    hung_line = m.wait_log(rf"worker 0 pid {pid} hung: no heartbeat for").string
    m.wait_log(rf"worker 0 pid {pid} killed by SIGKILL")
    new = m.wait_respawn(0, pid, require_alive=False)
    assert new != pid
    assert not is_alive(pid)
    # Not killed before --worker-timeout had passed since it was last heard.
    waited = log_time(hung_line) - log_time(ready_line)
    assert waited >= 0.95, f"killed {waited:.3f} s after ready, --worker-timeout is 1 s"


def test_signal_storm_on_newborn_workers(forkpool):
    # A signal that hits a child between fork() and the reset of its
    # signal handling can run the master's handler in the child, and with
    # libevent write into the signal socketpair the child still shares
    # with the master: the master would then "receive" it.  So: 200 times,
    # SIGTERM a worker as soon as its pid exists.
    #
    # Each round first SIGTERMs a mature worker (an ordinary exit, which
    # resets the slot's failed-start count), then the newborn that
    # replaces it; so the restart policy never delays the storm.
    m = forkpool("-w", "2", "--min-uptime", MIN_UPTIME, "--graceful-timeout", "5")
    pool = m.wait_pool(2)
    seen = set(pool.values())
    newborns = []
    for i in range(200):
        slot = i % 2
        pool = m.wait_pool(2)
        seen |= set(pool.values())
        old = pool[slot]
        m.wait_uptime(old, MATURE)
        os.kill(old, signal.SIGTERM)
        newborn = m.wait_new_child(seen)
        try:
            os.kill(newborn, signal.SIGTERM)
        except ProcessLookupError:
            pass
        seen.add(newborn)
        # Let it finish exiting, so the next round cannot pick it as the
        # "mature" worker of its slot while it is on its way out.
        wait_for(lambda: not is_alive(newborn), what=f"pid {newborn} to exit")
        newborns.append((newborn, time.time()))

    assert m.alive(), f"the master died in the storm\n{m.describe()}"
    ready_at = {int(x.group(2)): log_time(x.string) for x in m.find(r"worker (\d+) pid (\d+) ready")}
    early = sum(1 for p, t in newborns if t < ready_at.get(p, float("inf")))
    print(f"{early} of {len(newborns)} newborns were signalled before they said ready")
    pool = m.wait_pool(2)
    m.wait_no_zombies()
    assert not m.find(r"shutdown complete"), "the master began to shut down"
    # Still respawning, i.e. not shutting down, and still serving.
    old = pool[0]
    os.kill(old, signal.SIGKILL)
    m.wait_respawn(0, old)
    m.wait_pool(2)
    assert echo_roundtrip(("127.0.0.1", m.port))
    assert m.stop() == 0
    m.assert_tree_gone()
