"""Scenarios of a pool's life, for every server that has one: respawn
after SIGKILL, rolling reload under keep-alive load, graceful shutdown
under keep-alive load."""
import json
import os
import signal
import statistics
import subprocess
import time

from common import children, probe_burst, say, spawn, summary
from loadgen import ka_cmd
from servers import (EXTRA_LIFECYCLE, EXTRA_RELOAD, Forkpool, ForkpoolExec,
                     Gunicorn, Nginx, Node, available)


def respawn_one(s, kills, gap):
    """SIGKILL a worker `kills` times; from the kill to a new worker pid,
    to the replacement answering a request (its X-Pid), and for forkpool to
    its "ready" in the master's log."""
    pid_ms, serve_ms, ready_ms, fork_ms, missed = [], [], [], [], 0
    for k in range(kills):
        old = s.worker_pids()
        victim = sorted(old)[k % len(old)]
        time.sleep(gap)
        t0w, t0 = time.time(), time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline = t0 + 10
        new = set()
        while not new:
            if time.monotonic() > deadline:
                raise RuntimeError("%s: no new worker 10 s after a kill" %
                                   s.label)
            new = children(s.proc.pid) - old
            if not new:
                time.sleep(0.0002)
        t_pid = time.monotonic()
        pid_ms.append((t_pid - t0) * 1e3)
        newpid = new.pop()
        deadline = time.monotonic() + 3
        served = None
        while time.monotonic() < deadline:
            if newpid in probe_burst(s.port, 4):
                served = time.monotonic()
                break
        if served is None:
            missed += 1
        else:
            serve_ms.append((served - t0) * 1e3)
        if isinstance(s, Forkpool):
            end = time.monotonic() + 5
            while newpid not in s.ready and time.monotonic() < end:
                s.poll_log()
                time.sleep(0.0005)
            if newpid in s.ready:
                ready_ms.append((s.ready[newpid] - t0w) * 1e3)
            if newpid in s.after_fork:
                fork_ms.append(s.after_fork[newpid])
        # the next victim must be a settled pool
        end = time.monotonic() + 10
        while len(s.worker_pids()) < s.workers and time.monotonic() < end:
            time.sleep(0.001)
    return {"kills": kills, "new_pid_ms": summary(pid_ms),
            "ready_ms": summary(ready_ms), "served_ms": summary(serve_ms),
            "fork_to_ready_ms": summary(fork_ms),
            "not_served_in_3s": missed}


def sc_respawn(cfg, res):
    out = res.setdefault("respawn", {})
    for cls in [Forkpool, ForkpoolExec, Nginx, Node, Gunicorn]:
        if not available(cls):
            continue
        if issubclass(cls, Forkpool):
            # --min-uptime is lowered so that 200 kills take seconds, not
            # minutes; each worker still lives past it, so none counts as
            # a failed start (which would back off).
            s = cls(args=["--min-uptime", "0.001"])
            kills = cfg.kills
        else:
            s = cls()
            kills = cfg.peer_kills
        s.start()
        try:
            r = respawn_one(s, kills, 0.005)
        finally:
            s.stop()
        out[s.name] = r
        say("  respawn %-14s %3d kills: new pid p50 %.2f ms, answers "
            "p50 %.2f ms%s" % (
                s.label, kills, r["new_pid_ms"]["median"],
                r["served_ms"]["median"] if r["served_ms"] else float("nan"),
                ", ready p50 %.2f ms p99 %.2f ms" % (
                    r["ready_ms"]["median"], r["ready_ms"]["p99"])
                if r["ready_ms"] else ""))


def dip(r, t_sig, window_s):
    """Throughput around a signal, from ka-client's buckets: before (the
    median bucket over the second before it), the lowest bucket from the
    signal to the end of the window, both in req/s."""
    b = r["bucket_ms"] / 1e3
    buckets = r["buckets"]
    first = int((t_sig - r["start"]) / b)
    before = buckets[max(0, first - int(1 / b)):first]
    during = buckets[first:first + max(1, int(window_s / b) + 1)]
    if not before or not during:
        return None, None
    return statistics.median(before) / b, min(during) / b


def reload_time_ms(s):
    """forkpool's own time for a full rolling reload, from its log: "got
    SIGHUP" to "reload complete" (None if it did not complete)."""
    hup, done = s.log_times("got SIGHUP"), s.log_times("reload complete")
    if not hup or not done:
        return None
    return (done[0] - hup[0]) * 1e3


def sc_reload(cfg, res):
    """Rolling reload under keep-alive load: K connections sending back to
    back; the reload signal a third into the run."""
    out = res.setdefault("reload", {})
    servers = ([Forkpool] + EXTRA_LIFECYCLE + EXTRA_RELOAD +
               [ForkpoolExec, Nginx, Node, Gunicorn])
    for rnd in range(cfg.rounds):
        for cls in servers:
            if not available(cls):
                continue
            row = _reload_run(cfg, cls)
            out.setdefault(cls.name, []).append(row)
            say("  reload round %d %-14s dropped %d, reset %d, refused %d, "
                "errors %d; old workers gone in %s ms%s; lowest %s of %s "
                "req/s" % (
                    rnd + 1, cls.label, row["dropped"], row["reset_new"],
                    row["refused"], row["errors"], _f(row["old_gone_ms"]),
                    "" if row["reload_ms"] is None else
                    ", reload complete in %.0f ms (log)" % row["reload_ms"],
                    _f(row["lowest_rps"]), _f(row["before_rps"])))


def _f(v):
    return "?" if v is None else "%.0f" % v


def _reload_run(cfg, cls):
    s = cls().start()
    try:
        old = s.worker_pids()
        client = spawn(ka_cmd(s.port, cfg.ka_conns, cfg.reload_s),
                       stdout=subprocess.PIPE, text=True)
        time.sleep(cfg.reload_s / 3)
        t_sig, t0 = time.time(), time.monotonic()
        s.signal(s.reload_sig)
        gone = None
        while time.monotonic() - t0 < cfg.reload_s:
            if not (old & s.worker_pids()):
                gone = (time.monotonic() - t0) * 1e3
                break
            time.sleep(0.001)
        r = json.loads(client.communicate(timeout=cfg.reload_s + 30)[0])
        took = reload_time_ms(s) if isinstance(s, Forkpool) else None
    finally:
        s.stop()
    before, low = dip(r, t_sig, ((gone or 500) + 200) / 1e3)
    return {"workers": s.workers,
            "dropped": r["dropped"] - r["dropped_first"],
            "reset_new": r["dropped_first"], "refused": r["refused"],
            "errors": r["errors"] + r["timeouts"], "ok": r["ok"],
            "rps": r["rps"], "old_gone_ms": gone, "reload_ms": took,
            "before_rps": before, "lowest_rps": low}


def sc_shutdown(cfg, res):
    """Graceful shutdown under keep-alive load; connections give up at
    their first refused connect (the server is gone)."""
    out = res.setdefault("shutdown", {})
    for rnd in range(cfg.rounds):
        for cls in [Forkpool] + EXTRA_LIFECYCLE + [Nginx, Node, Gunicorn]:
            if not available(cls):
                continue
            s = cls().start()
            try:
                client = spawn(ka_cmd(s.port, cfg.ka_conns, cfg.reload_s,
                                      stop_on_refuse=True),
                               stdout=subprocess.PIPE, text=True)
                time.sleep(min(1.0, cfg.reload_s / 3))
                took = s.stop()
                r = json.loads(client.communicate(
                    timeout=cfg.reload_s + 30)[0])
            finally:
                s.stop()
            row = {"dropped": r["dropped"] - r["dropped_first"],
                   "reset_new": r["dropped_first"], "refused": r["refused"],
                   "errors": r["errors"] + r["timeouts"], "ok": r["ok"],
                   "exit_ms": took}
            out.setdefault(s.name, []).append(row)
            say("  shutdown round %d %-14s dropped %d, reset %d, refused %d"
                ", errors %d; exit in %s ms" % (
                    rnd + 1, s.label, row["dropped"], row["reset_new"],
                    row["refused"], row["errors"], _f(took)))
