"""Rolling reload (SIGHUP, `forkpool ctl reload`, the socket's "reload"):
per slot, a replacement starts, and once it is ready the old worker gets
SIGTERM and drains; at most one extra process per slot; a reload asked
during one starts the sweep over; a replacement that never becomes ready
aborts the reload and the old worker stays; under HTTP load no request
fails.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from fp.base import FORKPOOL_BIN, TIMEOUT, wait_for
from fp.control import by_slot, control_replies, control_status, start_pool
from fp.http import HttpLoad
from fp.net import EchoClient
from fp.proc import is_alive

# ---------------------------------------------------------------------------
# Helpers (the control socket, as in test_control.py)


def log_index(m, regex):
    """Index in the master's log lines of the first line matching regex."""
    rx = re.compile(regex)
    for i, line in enumerate(m.log.lines()):
        if rx.search(line):
            return i
    raise AssertionError(f"{regex!r} not in the log\n{m.describe()}")


def wait_reload_done(m, sock, reloads, aborted=0):
    """Wait until `reloads` reload requests were logged and none is under
    way any more (status says so and the last sweep logged "complete");
    no more than `aborted` reloads may have been aborted."""
    def done():
        if len(m.find(r"\breload: (rolling|starting over), \d+ workers")) < reloads:
            return None
        if len(m.find(r"reload aborted")) > aborted:
            raise AssertionError(f"reload aborted\n{m.describe()}")
        st = control_status(sock)
        if st["reloading"]:
            return None
        return m.find(r"\breload complete$")
    wait_for(done, what=lambda: f"{reloads} reload(s) to complete\n{m.describe()}")


def assert_replaced(m, old, new):
    """Every slot of `old` ({slot: pid}) has a new pid in `new`, and every
    old worker drained and exited 0."""
    assert sorted(new) == sorted(old), f"slots changed: {sorted(old)} -> {sorted(new)}"
    assert not set(new.values()) & set(old.values()), f"not every pid is new: {old} -> {new}"
    for slot, pid in old.items():
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b")
        assert not is_alive(pid)


def sample_while(sock, m, cond, samples):
    """Poll status while cond() holds, recording each; check the per-slot
    rule on every sample: at most two processes per slot, one "worker"."""
    while cond():
        st = control_status(sock)
        samples.append(st)
        for slot, procs in by_slot(st).items():
            assert len(procs) <= 2, f"slot {slot} has {len(procs)} processes: {procs}"
            assert [r for r, _, _ in procs].count("worker") <= 1, procs


# ---------------------------------------------------------------------------
# Reload of a quiet pool


HOW = ["SIGHUP", "ctl", "socket"]


@pytest.mark.parametrize("how", HOW)
def test_reload_replaces_every_worker_in_its_slot(forkpool, chaos, run_cli, sock_path, how):
    m, pool = start_pool(forkpool, sock_path, 3, "-k", chaos)
    if how == "SIGHUP":
        m.signal(signal.SIGHUP)
    elif how == "ctl":
        res = run_cli("ctl", "--control", sock_path, "reload")
        assert res.returncode == 0 and res.stdout.strip() == "ok", res
    else:
        rep, = control_replies(sock_path, {"cmd": "reload"})
        assert rep["ok"] is True and rep["result"] is True, rep
    samples = []
    sample_while(sock_path, m, lambda: not m.find(r"\breload complete$"), samples)
    wait_reload_done(m, sock_path, 1)
    new = m.wait_pool(3)
    assert_replaced(m, pool, new)
    # Slot by slot, in order, each replacement taking over from its
    # predecessor, which then drains.
    order = []
    for slot in sorted(pool):
        line = m.wait_log(rf"reload: worker {slot} pid {pool[slot]} is replaced by pid {new[slot]}$")
        order.append(log_index(m, re.escape(line.string)))
        m.wait_log(rf"reload: worker {slot} pid {new[slot]} took over; pid {pool[slot]} drains$")
        m.wait_out(rf"chaos worker {slot} pid {pool[slot]}: on_stop$")
        m.wait_out(rf"chaos worker {slot} pid {pool[slot]}: main returned$")
    assert order == sorted(order), "slots were not replaced in order"
    assert len(m.find(r"\breload complete$")) == 1
    st = control_status(sock_path)
    assert st["reloading"] is False and st["target"] == 3 and st["live"] == 3, st
    assert {w["id"]: w["pid"] for w in st["workers"]} == new
    assert all(w["role"] == "worker" and w["state"] == "ready" for w in st["workers"]), st
    assert m.children() == set(new.values())
    assert not m.find(r"did not stop within|hung|killed by")
    assert m.alive()


def test_reload_waits_for_a_draining_worker_before_replacing_its_slot_again(forkpool, sock_path):
    # One worker, and a client connected to it: the old worker drains as
    # long as the client stays, so its slot has an extra process that long.
    m, pool = start_pool(forkpool, sock_path, 1, "--graceful-timeout", "120")
    old = pool[0]
    client = EchoClient(("127.0.0.1", m.port))
    try:
        client.echo(b"before the reload\n")
        m.signal(signal.SIGHUP)
        line = m.wait_log(rf"reload: worker 0 pid (\d+) took over; pid {old} drains$")
        mid = int(line.group(1))
        m.wait_log(r"\breload complete$")
        st = control_status(sock_path)
        assert sorted(by_slot(st)[0]) == sorted([("worker", "ready", mid), ("draining", "stopping", old)]), st
        assert st["target"] == 1 and st["live"] == 2 and st["reloading"] is False, st
        assert m.children() == {old, mid}
        # The draining worker still serves the connection it has.
        client.echo(b"while draining\n")

        # A second reload must wait: slot 0 already has its one extra
        # process.  Watch for a while that no third one appears.
        rep, = control_replies(sock_path, {"cmd": "reload"})
        assert rep["ok"] is True, rep
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            st = control_status(sock_path)
            assert st["reloading"] is True, st
            assert len(by_slot(st)[0]) == 2, f"a third process in slot 0: {st}"
            assert len(m.children()) == 2, sorted(m.children())
            time.sleep(0.02)
        client.echo(b"still served\n")
    finally:
        client.close()
    # The client is gone: the old worker ends, and only then is slot 0
    # replaced again.
    m.wait_log(rf"worker 0 pid {old} exited with status 0\b")
    line = m.wait_log(rf"reload: worker 0 pid {mid} is replaced by pid (\d+)$")
    assert log_index(m, rf"worker 0 pid {old} exited") < log_index(m, re.escape(line.string))
    final = int(line.group(1))
    wait_reload_done(m, sock_path, 2)
    assert m.wait_pool(1) == {0: final}
    m.wait_log(rf"worker 0 pid {mid} exited with status 0\b")
    assert len(m.find(r"\breload complete$")) == 2


def test_a_reload_during_a_reload_starts_the_sweep_over(forkpool, chaos, sock_path):
    m, pool = start_pool(forkpool, sock_path, 3, "-k", chaos)
    # Both requests in one write: the master reads them in one go, so the
    # second surely arrives while the first sweep is under way.
    reps = control_replies(sock_path, {"cmd": "reload"}, {"cmd": "reload"})
    assert all(r["ok"] is True for r in reps), reps
    m.wait_log(r"\breload: starting over, 3 workers$")
    wait_reload_done(m, sock_path, 2)
    new = m.wait_pool(3)
    assert_replaced(m, pool, new)
    # Every worker now running was started after the last request.
    last = log_index(m, r"\breload: starting over\b")
    for slot, pid in new.items():
        assert log_index(m, rf"worker {slot} pid {pid} started\b") > last, (
            f"worker {slot} pid {pid} predates the second reload\n{m.describe()}")
    # Slot 0's first replacement was itself replaced.
    assert len(m.find(r"reload: worker 0 pid \d+ is replaced by")) == 2, m.describe()
    assert len(m.find(r"\breload complete$")) == 1
    st = control_status(sock_path)
    assert {w["id"]: w["pid"] for w in st["workers"]} == new and st["live"] == 3, st


def test_a_replacement_that_never_becomes_ready_aborts_the_reload(forkpool, chaos, sock_path):
    """The chaos worker appends a line to $FORKPOOL_CHAOS_HOOKS in every
    hook, on_start included, before it says "ready".  Turn that file into
    a FIFO nobody reads, and a new worker blocks in open() before "ready",
    while the running ones are untouched: the replacement hangs, is killed
    after --worker-timeout, and the reload is aborted."""
    m, pool = start_pool(forkpool, sock_path, 2, "--check-interval", "100ms", "--worker-timeout", "1s",
                    "-k", chaos, name="fifo")
    hooks = m.hooks.path
    # "ready" comes before main, and main's first act is to append its
    # "main" line to the hook file: a worker still short of that when the
    # FIFO goes in would block in open() too, and be killed as hung.  Its
    # printed "main" line follows the append, so seeing it means the
    # worker is past the file.
    for slot, pid in pool.items():
        m.wait_out(rf"chaos worker {slot} pid {pid}: main$")
    os.unlink(hooks)
    os.mkfifo(hooks)
    try:
        rep, = control_replies(sock_path, {"cmd": "reload"})
        assert rep["ok"] is True, rep
        line = m.wait_log(rf"reload: worker 0 pid {pool[0]} is replaced by pid (\d+)$")
        stuck = int(line.group(1))
        m.wait_log(r"reload aborted: the replacement for worker 0 did not become ready; "
                   r"the old worker stays")
        m.wait_log(rf"worker 0 pid {stuck} hung\b")
        m.wait_log(rf"worker 0 pid {stuck} killed by SIGKILL after [\d.]+ s, before ready")
        wait_for(lambda: not is_alive(stuck), what=f"pid {stuck} to be gone")
        # Nothing else changed: the same workers, no reload under way, slot
        # 1 never touched.
        assert m.wait_pool(2) == pool
        st = control_status(sock_path)
        assert st["reloading"] is False, st
        assert {w["id"]: w["pid"] for w in st["workers"]} == pool, st
        assert all(w["role"] == "worker" and w["state"] == "ready" for w in st["workers"]), st
        assert not m.find(r"reload: worker 1\b")
        assert not m.find(r"\breload complete$")
        for pid in pool.values():
            assert not m.find(rf"pid {pid} (exited|killed)")
    finally:
        os.unlink(hooks)
    # With the file back to normal, the next reload goes through.
    m.signal(signal.SIGHUP)
    wait_reload_done(m, sock_path, 2, aborted=1)
    assert_replaced(m, pool, m.wait_pool(2))


# ---------------------------------------------------------------------------
# Reload under load (the built-in http worker)


def http_available():
    out = subprocess.run([FORKPOOL_BIN, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    return re.search(r"^\s+http\b", out.stdout, re.M) is not None


# The SIGHUPs go out 1.5 and 3.0 s into the load, which lasts at least
# LOAD_SECONDS and on until the second reload is done (see below); LOAD_CAP
# only bounds it, a deadline for a run that went wrong, not a pace.
LOAD_SECONDS = 5.0
HUPS_AT = (1.5, 3.0)
LOAD_CAP = HUPS_AT[-1] + 3 * TIMEOUT


@pytest.mark.parametrize("workers", [2, 4])
def test_reload_twice_under_http_load_fails_no_request(forkpool, sock_path, workers):
    assert http_available(), "forkpool --help lists no built-in http worker"
    m, pool = start_pool(forkpool, sock_path, workers, "-k", "http")
    load = HttpLoad(m.port, body_prefix="hello from worker ")

    def until_reloaded():
        # A slow machine may take seconds per replacement, and the second
        # reload could outlast a fixed window: keep the load on until both
        # reloads are done (the old workers drained: a pool of just the new
        # ones), the new workers served some of it and every kept-alive
        # client was told to close (the checks below).
        try:
            wait_reload_done(m, sock_path, 2)
            new = set(m.wait_pool(workers).values())

            def new_workers_served():
                with load.lock:
                    served, closes = set(load.served_by), list(load.closes.values())
                return new & served and all(n >= 1 for n in closes)
            wait_for(new_workers_served,
                     what=lambda: f"the new workers to serve and every keep-alive "
                                  f"client to be told to close: {load.summary()}")
        except BaseException:
            load.stop()
            raise

    load.run(LOAD_CAP, at=[(t, lambda: m.signal(signal.SIGHUP)) for t in HUPS_AT]
             + [(HUPS_AT[-1], until_reloaded), (LOAD_SECONDS, load.stop)])
    failures, served_by, counts, closes = (load.failures, load.served_by, load.counts,
                                           load.closes)

    wait_reload_done(m, sock_path, 2)
    new = m.wait_pool(workers)
    summary = load.summary()
    print(summary)
    assert not failures, (f"{len(failures)} failed requests, e.g. {failures[:10]}; {summary}\n"
                          f"{m.describe()}")
    assert counts["keepalive"] > 0 and counts["fresh"] > 0, summary
    # Every worker pid is new, in the same slots, and the old ones drained.
    assert_replaced(m, pool, new)
    last = [i for i, l in enumerate(m.log.lines()) if re.search(r"\bgot SIGHUP$", l)]
    assert len(last) == 2, m.describe()
    for slot, pid in new.items():
        assert log_index(m, rf"worker {slot} pid {pid} started\b") > last[-1], (
            f"worker {slot} pid {pid} predates the second SIGHUP")
    # The load really went through the reloads: the new workers served
    # some of it, and every kept-alive connection was told to close.
    assert set(new.values()) & set(served_by), summary
    assert all(n >= 1 for n in closes.values()), summary
    assert not m.find(r"did not stop within|hung|killed by|reload aborted"), m.describe()
    st = control_status(sock_path)
    assert {w["id"]: w["pid"] for w in st["workers"]} == new and st["live"] == workers, st
