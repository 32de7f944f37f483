"""Respawn: a dead worker is replaced in the same slot at once, whatever
killed it, over and over, without zombies; a hung worker is killed; a
signal storm on newborn workers does not reach the master."""

import os
import signal

import pytest

from fp.base import build_module, report, wait_for
from fp.logs import log_time
from fp.net import assert_serves_alone, echo_roundtrip
from fp.proc import is_alive, proc_status

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


# A worker whose start waits for the test: on_start returns only once the
# file DIR/go.PID exists (DIR is the worker argument), so until the test
# creates it the worker cannot have said "ready".  main is the worker's
# own event loop, which a SIGTERM stops (exit 0).
GATE_MODULE = r"""
#include <limits.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <forkpool.h>

static const char *dir;

static int gate_setup(struct fpool_worker *w, int argc, char **argv)
{
	(void)w;
	if (argc != 2)
		return -1;
	dir = argv[1];
	return 0;
}

/* At most 60000 naps of 1 ms (fewer if signals cut them short). */
static int gate_on_start(struct fpool_worker *w, void *arg)
{
	const struct timespec nap = { 0, 1000 * 1000 };
	char path[PATH_MAX];

	(void)arg;
	snprintf(path, sizeof(path), "%s/go.%d", dir, (int)fpool_worker_pid(w));
	for (int i = 0; i < 60000; i++) {
		if (access(path, F_OK) == 0)
			return 0;
		nanosleep(&nap, NULL);
	}
	return -1;
}

static int gate_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w);
}

static const struct fpool_worker_def gate = {
	.name = "gate",
	.setup = gate_setup,
	.on_start = gate_on_start,
	.main = gate_main,
};

FPOOL_WORKER_MODULE(gate);
"""


def sigterm_pending_while_blocked(pid):
    """True if /proc says SIGTERM is pending in `pid` and blocked there:
    it arrived before the process unblocked signals."""
    try:
        st = proc_status(pid)
    except FileNotFoundError:
        return False
    bit = 1 << (signal.SIGTERM - 1)
    pending = int(st["ShdPnd"], 16) | int(st["SigPnd"], 16)
    return bool(pending & bit and int(st["SigBlk"], 16) & bit)


STORM_ROUNDS = 200


def test_signal_storm_on_newborn_workers(forkpool, tmp_path, capsys):
    """A signal that hits a child between fork() and the reset of its
    signal handling could run the master's handler in the child, and with
    libevent write into the signal socketpair the child still shares with
    the master: the master would then "receive" it and shut down.  The
    master blocks every signal around fork() and the child unblocks them
    only once its own handlers are in place (DESIGN.md, "Fork safety").

    So: 200 times, SIGTERM a worker as soon as its pid exists, always
    before it said ready (its start waits for the test: GATE_MODULE), and
    often while it still blocks every signal.  Each such newborn must
    stop through its own handler (ready, then exit 0: never killed by the
    signal's default action), be replaced in its slot, and the master
    must never take the signal for its own.

    Each round first SIGTERMs a mature worker (an ordinary exit, which
    resets the slot's failed-start count), then the newborn that replaces
    it; so the restart policy never delays the storm.
    """
    gate = build_module(tmp_path, "gate", GATE_MODULE)
    gates = tmp_path / "gates"
    gates.mkdir()

    def release(pid):
        (gates / f"go.{pid}").touch()

    m = forkpool("-w", "2", "-k", gate, "--min-uptime", MIN_UPTIME, "--graceful-timeout", "5",
                 "--", gates)
    seen = set()
    # The first two from the log: the master's children include the
    # short-lived process that checked the module before the start.
    for slot in range(2):
        pid = int(m.wait_log(rf"worker {slot} pid (\d+) started").group(1))
        seen.add(pid)
        release(pid)
    pool = m.wait_pool(2)
    in_window = 0
    for i in range(STORM_ROUNDS):
        slot = i % 2
        pool = m.wait_pool(2)
        seen |= set(pool.values())
        old = pool[slot]
        m.wait_uptime(old, MATURE)
        os.kill(old, signal.SIGTERM)
        newborn = m.wait_new_child(seen)
        seen.add(newborn)
        os.kill(newborn, signal.SIGTERM)  # it cannot be gone: its start waits for us
        in_window += sigterm_pending_while_blocked(newborn)
        assert not m.find(rf"\bpid {newborn} ready\b"), "the gate let a worker start"
        release(newborn)
        # It says ready, then its own handler stops it.
        m.wait_log(rf"\bworker {slot} pid {newborn} ready\b")
        end = m.wait_log(rf"\bworker {slot} pid {newborn} (exited with status \d+|killed by \S+)")
        assert end.group(1) == "exited with status 0", (
            f"a worker signalled before ready did not stop cleanly: {end.string}\n"
            f"{m.describe()}")
        # Its replacement starts when we say so.
        repl = m.wait_new_child(seen)
        seen.add(repl)
        release(repl)

    report(capsys, f"signal storm: {STORM_ROUNDS} newborns SIGTERMed before ready, "
                   f"{in_window} of them while they still blocked every signal")
    assert m.alive(), f"the master died in the storm\n{m.describe()}"
    assert not m.find(r"\bgot SIG(TERM|INT|QUIT)\b|shutting down|shutdown complete"), (
        f"the master took a newborn's signal for its own\n{m.describe()}")
    # The window between fork and the child's own handlers was hit.
    assert in_window > 0, "no newborn was signalled before it unblocked signals"
    pool = m.wait_pool(2)
    m.wait_no_zombies()
    # Still respawning, i.e. not shutting down.
    old = pool[0]
    os.kill(old, signal.SIGKILL)
    release(m.wait_new_child(seen))
    m.wait_respawn(0, old)
    m.wait_pool(2)
    assert m.stop() == 0
    m.assert_tree_gone()
