"""Chaos: under steady HTTP load, SIGKILL a random worker 100 times over
about 20 s, mixed with rolling reloads (SIGHUP) and scale changes (6, 3,
4 through the control socket).  Afterwards the pool is exactly at its
target, no zombie is left, the master's fd count and RSS are back where
they were, and every failed request is explained by one of our kills.

When is a failed request explained?  Each client records, per request,
when it started and when it ended (time.monotonic()), which connection it
went on (a connection number per client), and either the pid that served
it (the X-Pid header) or the exception.  Each kill is recorded as the
interval [just before, just after pidfd_send_signal(SIGKILL)] with its
victim.  A failed request is explained if
  (a) its connection had already been served by a pid P (keep-alive), and
      P was SIGKILLed before the request ended; or
  (b) it was the first request on its connection (connect or first
      request failed; we cannot know which worker accepted it), and some
      kill took place while it was under way: a kill interval that
      overlaps [request start, request end].
Anything else -- in particular a failure on a connection to a worker
that was only reloaded or scaled down (stopped gracefully) -- fails the
test: those paths must never fail a request.  So does a connection
answered by two different pids.

The victims are the master's children (workers, replacements, draining
workers alike) that the test has known for a little while; see
VICTIM_AGE.
"""

import os
import random
import select
import signal
import time

from fp.base import FORKPOOL_BIN, TIMEOUT, build_sanitizers, report, wait_for
from fp.control import control, control_status
from fp.http import HttpLoad
from fp.proc import fd_table, is_alive, proc_stat, vm_kib

KILLS = 100
KILL_EVERY = 0.2            # s, so the chaos lasts about 20 s
HUP_AT = (15, 45, 75)       # after this many kills, a SIGHUP
SCALE_AT = {25: 6, 55: 3, 85: 4}
KEEPALIVE_CLIENTS = 8
FRESH_CLIENTS = 4
RSS_SLACK_KIB = 512
# Victims are workers the test has known for VICTIM_AGE s, and the master
# runs with --min-uptime MIN_UPTIME < VICTIM_AGE: so a kill is an ordinary
# crash, respawned at once, never a failed start put in backoff (the
# restart policy has its own tests in test_supervision.py).  Otherwise, with
# a kill every 0.2 s, newborns get killed again and again, their slots back
# off for up to 10 s, and the remaining workers get killed even more often.
MIN_UPTIME = 0.2
VICTIM_AGE = 0.3


def fd_kinds(pid):
    """{kind: count} of the fds of pid: socket, pipe, anon_inode:[pidfd]..."""
    kinds = {}
    for target in fd_table(pid).values():
        kind = target.split(":[")[0] if ":[" in target else (
            target if target.startswith("anon_inode") else "file")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def exited(pidfd):
    """True once the process behind pidfd has exited (zombie or reaped)."""
    return bool(select.select([pidfd], [], [], 0)[0])


def quiet_pool(m, sock, n):
    """The status of a pool at rest with exactly n ready workers, one per
    slot 0..n-1, and the master's children exactly those; else None."""
    st = control_status(sock)
    ws = st["workers"]
    if (st["target"] != n or st["live"] != n or st["reloading"] or len(ws) != n
            or sorted(w["id"] for w in ws) != list(range(n))
            or any(w["state"] != "ready" or w.get("role") != "worker" for w in ws)):
        return None
    if m.children() != {w["pid"] for w in ws} or m.zombies():
        return None
    return st


def explain_failures(requests, kills):
    """Split the failed requests into (explained, unexplained) by the rule
    in the module docstring; each a list of (request, rule, detail), rule
    "a" or "b" for the explained.  kills: [(before, after, pid)]."""
    killed_at = {}
    for before, _after, pid in kills:
        killed_at.setdefault(pid, before)
    by_conn = {}
    for r in sorted(requests, key=lambda r: r.start):
        by_conn.setdefault((r.client, r.conn), []).append(r)
    explained, unexplained = [], []
    for reqs in by_conn.values():
        served = None
        for r in reqs:
            if r.error is None:
                if served is not None and served != r.pid:
                    unexplained.append((r, "-", f"connection served by {served}, then by "
                                                f"{r.pid}"))
                served = r.pid
                continue
            if served is not None:
                t = killed_at.get(served)
                if t is not None and t <= r.end:
                    explained.append((r, "a", f"its connection's worker {served} was killed"))
                else:
                    unexplained.append((r, "-", f"its connection's worker {served} was not "
                                                f"killed"))
                continue
            # First request on its connection: a kill during it?
            if any(b <= r.end and a >= r.start for b, a, _p in kills):
                explained.append((r, "b", "a kill happened while it was under way"))
            else:
                unexplained.append((r, "-", "first request on its connection, no kill "
                                            "during it"))
    return explained, unexplained


def test_chaos_kills_reloads_and_scaling_under_load(forkpool, sock_path, capsys):
    m = forkpool("-w", "4", "-k", "http", "--control", sock_path, "--min-uptime", MIN_UPTIME)
    m.wait_pool(4)
    wait_for(lambda: os.path.exists(sock_path), what="the control socket")
    rng = random.Random(os.environ.get("FORKPOOL_CHAOS_SEED") or None)
    load = HttpLoad(m.port, keepalive=KEEPALIVE_CLIENTS, fresh=FRESH_CLIENTS)
    victim_fds = []  # a pidfd per kill, to wait for its exit afterwards
    load.start()
    try:
        # Before: with the load running, at a moment the pool is at rest.
        wait_for(lambda: any(r.pid for r in load.requests), what="a first served request")
        wait_for(lambda: quiet_pool(m, sock_path, 4), what=lambda: f"a quiet pool\n{m.describe()}")
        fds_before, rss_before = len(fd_table(m.pid)), vm_kib(m.pid)
        kinds_before = fd_kinds(m.pid)

        kills, actions = [], []
        seen = {}  # pid -> when the test first saw it (it is at least that old)
        t0 = time.monotonic()
        next_at = t0 + KILL_EVERY
        deadline = t0 + KILLS * KILL_EVERY + TIMEOUT
        while len(kills) < KILLS:
            assert time.monotonic() < deadline, f"only {len(kills)} kills\n{m.describe()}"
            assert m.alive(), f"the master died\n{m.describe()}"
            n = len(kills)
            if n in HUP_AT and ("hup", n) not in actions:
                actions.append(("hup", n))
                m.signal(signal.SIGHUP)
            if n in SCALE_AT and ("scale", n) not in actions:
                actions.append(("scale", n))
                rep = control(sock_path, {"cmd": "scale", "workers": SCALE_AT[n]})
                assert rep["ok"] is True, rep
            # Pace: one kill every KILL_EVERY s.
            time.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            kids = m.children()
            for pid in kids:
                seen.setdefault(pid, now)
            victims = sorted(p for p in kids if now - seen[p] >= VICTIM_AGE)
            if not victims:
                time.sleep(0.01)  # only newborns now: wait until one is old enough
                continue
            victim = rng.choice(victims)
            # Through a pidfd, checked to be the master's child once open,
            # so a recycled pid can never be hit.
            try:
                pidfd = os.pidfd_open(victim)
            except ProcessLookupError:
                continue
            try:
                st = proc_stat(victim)
                if st is None or st.ppid != m.pid or st.state == "Z":
                    os.close(pidfd)
                    continue
                before = time.monotonic()
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                kills.append((before, time.monotonic(), victim))
                victim_fds.append(pidfd)
            except ProcessLookupError:
                os.close(pidfd)
                continue
            next_at = max(next_at + KILL_EVERY, time.monotonic() + KILL_EVERY / 2)
        chaos_seconds = time.monotonic() - t0
    finally:
        load.stop()
        load.join()
        # A SIGKILLed process is not gone at once: its exit (an
        # AddressSanitizer build unmaps terabytes of shadow) can take
        # longer than the load takes to stop, and until then it is neither
        # a zombie nor reaped, so the master still counts it as ready.
        # Wait until every victim has exited before looking for quiet.
        try:
            wait_for(lambda: all(exited(fd) for fd in victim_fds), timeout=TIMEOUT,
                     what="every SIGKILLed worker gone")
        finally:
            for fd in victim_fds:
                os.close(fd)

    # Wait for quiet: every slot back (backoff is capped at 10 s).
    t_load_stopped = time.monotonic()
    st = wait_for(lambda: quiet_pool(m, sock_path, 4), timeout=TIMEOUT + 15, what=lambda: (
        f"the pool back at exactly 4 ready workers (status {control_status(sock_path)}, children "
        f"{sorted(m.children())})\n{m.describe()}"))
    m.wait_no_zombies()
    wait_for(lambda: len(fd_table(m.pid)) == fds_before, timeout=5, what=lambda: (
        f"the master's fds back at {fds_before} ({kinds_before}); now "
        f"{len(fd_table(m.pid))} ({fd_kinds(m.pid)})"))
    fds_after, rss_after = len(fd_table(m.pid)), vm_kib(m.pid)
    quiet_after = time.monotonic() - t_load_stopped

    requests = [r for r in load.requests if r.end is not None]
    failed = [r for r in requests if r.error is not None]
    explained, unexplained = explain_failures(requests, kills)
    killed = {p for _b, _a, p in kills}
    rule_a = sum(1 for _r, rule, _d in explained if rule == "a")
    rule_b = len(explained) - rule_a
    kinds = {}
    for r in failed:
        kind = r.error.split("(")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    fig = [f"chaos: {len(kills)} SIGKILLs of {len(killed)} distinct workers in "
           f"{chaos_seconds:.1f} s, actions {actions}"]
    fig.append(f"  requests: {len(requests)} ({len(requests) - len(failed)} served, "
               f"{len(failed)} failed: {rule_a} on a kept-alive connection to a killed "
               f"worker, {rule_b} first requests during a kill, {len(unexplained)} "
               f"unexplained; errors {kinds})")
    fig.append(f"  master fds: before {fds_before} {kinds_before}, after {fds_after} "
               f"{fd_kinds(m.pid)}")
    fig.append(f"  master VmRSS: before {rss_before} KiB, after {rss_after} KiB "
               f"({rss_after - rss_before:+d} KiB)")
    respawns = len(m.find(r"started \(respawn"))
    backoffs = len(m.find(r"failed starts in a row"))
    aborted = len(m.find(r"reload aborted"))
    fig.append(f"  respawns logged: {respawns}, backoff waits: {backoffs}, reloads aborted: "
               f"{aborted}; the pool was back at rest {quiet_after:.1f} s after the load "
               f"stopped")
    report(capsys, "\n".join(fig))

    assert not unexplained, (
        f"{len(unexplained)} failed requests not explained by a kill, e.g. "
        + "; ".join(f"{r.client} conn {r.conn} {'first ' if r.first else ''}request "
                    f"[{r.start - t0:.3f}, {r.end - t0:.3f}] s: {r.error} ({why})"
                    for r, _rule, why in unexplained[:10])
        + f"\n{m.describe()}")
    assert len(requests) - len(failed) > 1000, f"too little load: {len(requests)} requests"
    assert len(m.find(r"\bgot SIGHUP$")) == len(HUP_AT), m.describe()
    assert len(m.find(r"\breload: (rolling|starting over), \d+ workers$")) == len(HUP_AT)
    # Exactly at target, children match the status, nothing left over.
    assert st["target"] == 4 and st["live"] == 4, st
    assert m.children() == {w["pid"] for w in st["workers"]}
    assert not m.zombies()
    assert not any(is_alive(p) for p in killed), "a killed worker is still alive"
    assert fds_after == fds_before, (fds_before, kinds_before, fds_after, fd_kinds(m.pid))
    # AddressSanitizer holds freed memory in quarantine, so a sanitized
    # master's RSS grows with what it frees; the bound is for real builds.
    slack = RSS_SLACK_KIB * (16 if build_sanitizers(FORKPOOL_BIN) else 1)
    assert rss_after - rss_before <= slack, (
        f"master RSS grew from {rss_before} to {rss_after} KiB")
    assert m.alive()
    # The pool still serves, and stops cleanly.
    assert m.stop() == 0, m.describe()
