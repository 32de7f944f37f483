"""Scenarios of the master alone: how it scales with the pool (start,
rolling reload, memory, idle CPU at 64 to 4096 echo workers) and how fast
it forwards the workers' log records."""
import os
import signal
import subprocess
import time

from common import (BIN, CHAOS, STARTING, CpuShare, cpu_seconds,
                    free_port, kill_session, log_time, memory, say, spawn,
                    summary, tmpdir)
from sc_lifecycle import reload_time_ms
from servers import ForkpoolEcho

# The master's refusal of a pool that does not fit its RLIMIT_NOFILE
# (src/limits.c): the size is skipped, with the master's line.
NOFILE = "open files in the master, but its limit is"


def sc_scale(cfg, res):
    """For each pool size: the time until all workers are ready and the
    time of a full rolling reload (both from the master's own log), the
    master's RSS and its CPU at idle, the workers' private memory, and
    the graceful stop."""
    out = res["scale"] = {"sizes": [], "idle_s": cfg.idle_s,
                          "rounds": cfg.scale_rounds}
    for n in cfg.scale_sizes:
        size = {"workers": n, "rounds": []}
        out["sizes"].append(size)
        for rnd in range(cfg.scale_rounds):
            row = _scale_round(cfg, n, idle=(rnd == 0))
            if "skipped" in row:
                size["skipped"] = row["skipped"]
                say("  scale %d workers: skipped: %s" % (n, row["skipped"]))
                break
            size["rounds"].append(row)
            say("  scale round %d: %4d workers ready in %.0f ms (%.0f ms "
                "from exec), reload %.0f ms, stop %s ms%s" % (
                    rnd + 1, n, row["ready_ms"], row["exec_to_ready_ms"],
                    row["reload_ms"], "%.0f" % row["stop_ms"]
                    if row["stop_ms"] is not None else "?",
                    "; idle %.0f s: master CPU %.3f%%, RSS %d kB; worker "
                    "USS median %d kB" % (
                        row["idle_s"], row["master_cpu_pct"],
                        row["master_rss_kb"],
                        row["worker_uss_kb"]["median"])
                    if "idle_s" in row else ""))
        rounds = size["rounds"]
        if not rounds:
            continue
        for key in ("ready_ms", "exec_to_ready_ms", "reload_ms", "stop_ms"):
            size[key] = summary([r.get(key) for r in rounds])
        for key in ("idle_s", "master_cpu_pct", "master_rss_kb",
                    "master_uss_kb", "worker_uss_kb"):
            size[key] = rounds[0].get(key)


def _scale_round(cfg, n, idle):
    s = ForkpoolEcho(workers=n)
    t_exec = time.time()
    try:
        s.start(timeout=30 + n / 20)
    except RuntimeError:
        s.stop()
        for line in s.log_text().splitlines():
            if NOFILE in line:
                return {"skipped": line.split("master: ", 1)[-1]}
        raise
    try:
        first = [log_time(STARTING.match(line).group(1))
                 for line in s.log_lines if STARTING.match(line)][0]
        last = max(s.ready.values())
        row = {"ready_ms": (last - first) * 1e3,
               "exec_to_ready_ms": (last - t_exec) * 1e3}
        if idle:
            row.update(_idle(cfg, s))
        s.signal(signal.SIGHUP)
        # A worker slow to be ready holds a reload step for up to 2 s,
        # so the bound grows with the pool.
        deadline = time.monotonic() + 60 + n / 10
        while reload_time_ms(s) is None:
            if time.monotonic() > deadline or s.proc.poll() is not None:
                s.fail("no \"reload complete\" after SIGHUP")
            time.sleep(0.05)
        row["reload_ms"] = reload_time_ms(s)
    finally:
        stop_ms = s.stop(timeout=60)
    row["stop_ms"] = stop_ms
    return row


def _idle(cfg, s):
    """The master at idle: its CPU over cfg.idle_s, then its memory and
    the workers'."""
    pid = s.proc.pid
    time.sleep(0.5)
    share = CpuShare(pid)
    time.sleep(cfg.idle_s)  # the quantity measured is idle
    cpu = share.end()
    m = memory(pid)
    uss = [w["uss"] for w in (memory(p) for p in s.worker_pids()) if w]
    return {"idle_s": round(share.seconds, 1), "master_cpu_pct": cpu,
            "master_rss_kb": m["rss"], "master_uss_kb": m["uss"],
            "worker_uss_kb": summary(uss)}


def logs(workers, records):
    """Each chaos worker logs `records` records as fast as it can; the
    master writes them to a file.  Records/s from the master's start to
    the last record written, and the master's share of a CPU."""
    if not os.path.exists(CHAOS):
        raise RuntimeError("%s is not built (meson -Dtests=enabled)" % CHAOS)
    path = os.path.join(tmpdir(), "records.log")
    open(path, "w").close()
    p = spawn([BIN, "-b", "127.0.0.1:%d" % free_port(), "-w", str(workers),
               "-k", CHAOS, "--log-file", path, "--", "--log-records",
               str(records)], stdin=subprocess.DEVNULL,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = workers * records
    try:
        # The pool's own lines ("ready") go to the log file too: count only
        # the workers' records.
        t0, c0 = time.monotonic(), cpu_seconds(p.pid)
        seen, pos, tail = 0, 0, b""
        deadline = t0 + 300
        while seen < want and time.monotonic() < deadline:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
            pos += len(data)
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            seen += sum(1 for line in lines if b": record " in line)
            time.sleep(0.01)
        t1, c1 = time.monotonic(), cpu_seconds(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            pass
        kill_session(p.pid)
        p.wait()
    if seen != want:
        raise RuntimeError("%d of %d records arrived" % (seen, want))
    return {"workers": workers, "records": records,
            "records_per_s": want / (t1 - t0),
            "master_cpu_pct": 100.0 * (c1 - c0) / (t1 - t0)}


def sc_logs(cfg, res):
    """Log forwarding with 2 and 4 workers flooding."""
    runs = []
    for n in (2, 4):
        r = logs(n, cfg.records)
        runs.append(r)
        say("  logs: %d workers x %d records: %.0f records/s through the "
            "master, master CPU %.0f%% of one core" % (
                n, r["records"], r["records_per_s"], r["master_cpu_pct"]))
    res["logs"] = {"runs": runs}
