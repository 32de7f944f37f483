"""Recycling: workers retired by --max-requests (with jitter),
--max-lifetime and --max-rss through the rolling path, one slot at a
time, gracefully, and under HTTP load without failing a request.

The chaos worker (tests/workers/chaos.c) provides the requests and the
growth: --count-requests and --grow-mib.
"""

import re
import statistics
import time

from fp.base import TIMEOUT, report, wait_for
from fp.control import by_slot, control_status, start_pool
from fp.http import HttpLoad
from fp.logs import log_time
from fp.proc import is_alive, vm_kib

# ---------------------------------------------------------------------------
# Helpers


def check_pool_sample(st, target):
    """The per-sample rules while a pool of `target` slots recycles: the
    target never changes, every slot 0..target-1 has exactly one process in
    the role "worker", no slot has more than one extra process, and at
    most one slot is being replaced (has a "replacement") at a time."""
    assert st["target"] == target, st
    slots = by_slot(st)
    assert sorted(slots) == list(range(target)), f"slots {sorted(slots)}: {st}"
    replacing = []
    for slot, procs in slots.items():
        roles = [r for r, _, _ in procs]
        assert roles.count("worker") == 1, f"slot {slot}: {procs}"
        assert len(procs) <= 2, f"slot {slot} has {len(procs)} processes: {procs}"
        if "replacement" in roles:
            replacing.append(slot)
    assert len(replacing) <= 1, f"slots {replacing} are replaced at the same time: {st}"


RECYCLE_RE = re.compile(r"\brecycling worker (\d+) pid (\d+): it (.*)$")
TOOK_OVER_RE = re.compile(r"\b(?:reload|recycle): worker (\d+) pid (\d+) took over; pid (\d+) drains$")
STARTED_RE = re.compile(r"\bworker (\d+) pid (\d+) started\b")


def recycle_events(m):
    """The master's recycling story, in log order: a list of
    ("recycle", slot, pid, reason, time) and ("took over", slot, new pid,
    old pid, time)."""
    events = []
    for line in m.log.lines():
        r = RECYCLE_RE.search(line)
        if r:
            events.append(("recycle", int(r.group(1)), int(r.group(2)), r.group(3),
                           log_time(line)))
            continue
        t = TOOK_OVER_RE.search(line)
        if t:
            events.append(("took over", int(t.group(1)), int(t.group(2)), int(t.group(3)),
                           log_time(line)))
    return events


def assert_one_at_a_time(m, events):
    """Each recycle's replacement took over before the next recycle began,
    and took over from the very worker being recycled."""
    pending = None
    for ev in events:
        if ev[0] == "recycle":
            assert pending is None, (
                f"worker {ev[1]} pid {ev[2]} is recycled while worker {pending[1]} pid "
                f"{pending[2]} still waits for its replacement\n{m.describe()}")
            pending = ev
        elif pending is not None and (ev[1], ev[3]) == (pending[1], pending[2]):
            pending = None
    return pending


def completed_recycles(m):
    """(recycle event, its took-over event) pairs completed so far."""
    pairs, pending = [], {}
    for ev in recycle_events(m):
        if ev[0] == "recycle":
            pending[(ev[1], ev[2])] = ev
        elif (ev[1], ev[3]) in pending:
            pairs.append((pending.pop((ev[1], ev[3])), ev))
    return pairs


def started_times(m):
    """{pid: log time of its "started" line}."""
    out = {}
    for line in m.log.lines():
        s = STARTED_RE.search(line)
        if s:
            out[int(s.group(2))] = log_time(line)
    return out


def assert_recycled_gracefully(m, pairs):
    """Every recycled worker drained and exited 0 (SIGTERM, not SIGKILL)."""
    for rec, _ in pairs:
        m.wait_log(rf"worker {rec[1]} pid {rec[2]} exited with status 0 after\b")
        wait_for(lambda: not is_alive(rec[2]), what=f"pid {rec[2]} to be gone")
    assert not m.find(r"did not stop within|hung:|killed by|failed starts|recycling worker \d+ "
                      r"failed"), m.describe()


# ---------------------------------------------------------------------------
# Recycling


def test_recycling_by_requests_one_slot_at_a_time(forkpool, chaos, sock_path, capsys):
    m, pool = start_pool(forkpool, sock_path, 2, "--min-uptime", "0.1", "--max-requests", "200",
                    "--max-requests-jitter", "100", "-k", chaos, "--", "--count-requests", "50")
    samples = 0
    # Watch the pool while it recycles, until 4 recycles are complete.
    deadline = time.monotonic() + TIMEOUT
    while len(completed_recycles(m)) < 4:
        assert time.monotonic() < deadline, f"fewer than 4 recycles\n{m.describe()}"
        check_pool_sample(control_status(sock_path), 2)
        samples += 1
        time.sleep(0.01)
    pairs = completed_recycles(m)
    assert_one_at_a_time(m, recycle_events(m))
    limits = []
    for rec, took in pairs:
        r = re.fullmatch(r"served (\d+) requests \(its limit (\d+)\)", rec[3])
        assert r, rec
        served, limit = int(r.group(1)), int(r.group(2))
        assert 200 <= limit <= 300, rec
        assert served >= limit, rec
        limits.append(limit)
    # Each worker draws its own limit (all equal: chance 1 in 100^3).
    assert len(set(limits)) > 1, limits
    assert_recycled_gracefully(m, pairs)
    report(capsys, f"recycled by requests: limits {limits}, {samples} status samples")
    # The pool is exactly 2 between recycles.
    st = wait_for(lambda: (lambda s: s if s["live"] == 2 else None)(control_status(sock_path)))
    check_pool_sample(st, 2)


def test_recycling_by_lifetime(forkpool, chaos, sock_path, capsys):
    ci = 0.2
    # A busy machine may stall the master's check for a while: `slack`
    # allows for that, and the lifetime is long enough that a retirement
    # within due + ci + slack still means "at the first checks after it
    # was due", not "one lifetime late" (2 x lifetime > lifetime * 1.1 +
    # ci + slack).
    lifetime, slack = 3.0, 2.0
    m, pool = start_pool(forkpool, sock_path, 2, "--check-interval", str(ci), "--max-lifetime",
                    f"{lifetime:g}", "-k", chaos)
    # Two lifetimes per slot are the wait itself, not the machine's speed.
    deadline = time.monotonic() + TIMEOUT + 2 * lifetime * 1.1
    while len(completed_recycles(m)) < 4:
        assert time.monotonic() < deadline, f"fewer than 4 recycles\n{m.describe()}"
        check_pool_sample(control_status(sock_path), 2)
        time.sleep(0.01)
    events = recycle_events(m)
    assert_one_at_a_time(m, events)
    pairs = completed_recycles(m)
    born = started_times(m)
    lives = []
    for rec, _ in pairs:
        r = re.fullmatch(r"lived ([\d.]+) s \(its limit ([\d.]+) s\)", rec[3])
        assert r, rec
        lived, limit = float(r.group(1)), float(r.group(2))
        assert lifetime <= limit <= round(lifetime * 1.1, 1), rec  # up to 10 % jitter
        assert lived >= limit - 0.05, rec  # both rounded to 0.1
        life = rec[4] - born[rec[2]]
        lives.append(round(life, 3))
        # It goes at the first check after it is due, or, if another slot
        # was being replaced then, at the first check after that one took
        # over (one slot at a time).
        due = born[rec[2]] + limit
        before = [e[4] for e in events if e[0] == "took over" and e[4] <= rec[4]]
        free = max([due] + [t for t in before if t > due])
        assert lifetime <= life <= (free - born[rec[2]]) + ci + slack, (
            f"worker {rec[1]} pid {rec[2]} retired {life:.3f} s after it started "
            f"(limit {limit} s)\n{m.describe()}")
    report(capsys, f"recycled by lifetime (--check-interval {ci}): lifetimes {lives} s")
    assert_recycled_gracefully(m, pairs)


def test_recycling_by_rss(forkpool, chaos, sock_path):
    m, _ = start_pool(forkpool, sock_path, 1, "--check-interval", "0.2", "--max-rss", "20",
                 "-k", chaos, "--", "--grow-mib", "40")
    # The first worker's pid from its ready line, not from the pool: it
    # grows right after ready, and the next check may recycle it before
    # start() looks, so the pool may already be its replacement.
    pid = int(m.wait_log(r"\bworker 0 pid (\d+) ready\b").group(1))
    line = m.wait_log(r"\brecycling worker 0 pid (\d+): it grew to (\d+) KiB RSS, over "
                      r"--max-rss 20 MiB$")
    assert int(line.group(1)) == pid, line.string
    assert int(line.group(2)) > 20 * 1024, line.string
    m.wait_log(rf"\brecycle: worker 0 pid \d+ took over; pid {pid} drains$")
    m.wait_log(rf"\bworker 0 pid {pid} exited with status 0 after\b")
    assert_one_at_a_time(m, recycle_events(m))


def test_no_recycling_below_max_rss(forkpool, chaos, sock_path):
    m, pool = start_pool(forkpool, sock_path, 1, "--check-interval", "0.2", "--max-rss", "200",
                    "-k", chaos, "--", "--grow-mib", "40")
    pid = pool[0]
    m.wait_out(rf"chaos worker 0 pid {pid}: main$")
    # The worker really is big: the check below means something.
    kib = wait_for(lambda: (lambda k: k if k > 40 * 1024 else None)(vm_kib(pid)),
                   what=f"pid {pid} to grow past 40 MiB")
    assert kib < 200 * 1024
    # Something must *not* happen: watch a dozen checks go by.
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        assert not m.find(r"\brecycling worker\b"), m.describe()
        time.sleep(0.05)
    assert m.wait_pool(1) == {0: pid}


def test_recycling_under_http_load_fails_no_request(forkpool, sock_path, capsys):
    m, pool = start_pool(forkpool, sock_path, 2, "-k", "http", "--max-requests", "1000",
                    "--max-requests-jitter", "200")
    # Load for at least `seconds`, and on until 3 recycles are complete
    # (4000 to 5000 requests), however long the build under test takes to
    # serve them.
    seconds, want = 6.0, 3
    budget = max(3 * TIMEOUT, seconds)
    load = HttpLoad(m.port)

    def wait_recycled():
        try:
            wait_for(lambda: len(completed_recycles(m)) >= want, budget, interval=0.05,
                     what=lambda: f"{want} recycles under load ({load.summary()})\n"
                                  f"{m.describe()}")
        except BaseException:
            load.stop()
            raise

    load.run(budget, at=[(0, wait_recycled), (seconds, load.stop)])
    took = load.stopped_after
    failures, counts, closes, wall0 = load.failures, load.counts, load.closes, load.wall0
    # Quiet: no request comes, so no recycle starts; wait for the last one
    # to finish and for the pool to be 2 workers again.
    wait_for(lambda: (lambda s: s if s["live"] == 2 else None)(control_status(sock_path)),
             what=lambda: f"the pool back at 2 processes\n{m.describe()}")
    final = m.wait_pool(2)

    pairs = completed_recycles(m)
    total = load.total()
    per_slot = {}
    for rec, _ in pairs:
        r = re.fullmatch(r"served (\d+) requests \(its limit (\d+)\)", rec[3])
        assert r, rec
        assert 1000 <= int(r.group(2)) <= 1200, rec
        per_slot.setdefault(rec[1], []).append(
            (round(rec[4] - wall0, 2), int(r.group(1)), int(r.group(2))))
    times = sorted(rec[4] - wall0 for rec, _ in pairs)
    gaps = [b - a for a, b in zip(times, times[1:])]
    fig = [f"recycling under http load, {took:.1f} s: {total} requests ({counts}), "
           f"{len(failures)} failed, {len(pairs)} recycles; Connection: close per keep-alive "
           f"client {sorted(closes.values())}"]
    for slot in sorted(per_slot):
        fig.append(f"  worker {slot} recycled at (s since load start, served, limit): "
                   f"{per_slot[slot]}")
    if gaps:
        fig.append(f"  gaps between consecutive recycles: min {min(gaps):.2f} s, median "
                   f"{statistics.median(gaps):.2f} s, max {max(gaps):.2f} s")
    report(capsys, "\n".join(fig))
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:10]}\n{m.describe()}"
    assert len(pairs) >= want, f"only {len(pairs)} recycles of {total} requests\n{m.describe()}"
    assert_one_at_a_time(m, recycle_events(m))
    assert_recycled_gracefully(m, pairs)
    assert set(final) == {0, 1}
    st = control_status(sock_path)
    check_pool_sample(st, 2)
