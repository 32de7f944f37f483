"""Scenarios of requests per second: throughput (every server), the
framework overhead (forkpool against bare http), system calls per request,
echo, the spread over workers (shared socket or --reuse-port) and
jsonrpc."""
import statistics
import time

import os
import re
import signal
import subprocess

from common import have, say, summary, tmpdir, wait_for
from loadgen import (conn_spread, echo_load, http_load, jsonrpc_pings,
                     ka_client, measured)
from servers import (EXTRA_THROUGHPUT, HTTP_SERVERS, Bare, BareHttp,
                     Forkpool, ForkpoolEcho, Nginx, available)


def sc_throughput(cfg, res):
    """wrk -t2 -c64 and -c8, keep-alive, -w 2; rounds interleave the
    servers so that drift in the machine's load touches them alike."""
    servers = [c for c in HTTP_SERVERS + EXTRA_THROUGHPUT if available(c)]
    out = res.setdefault("throughput", {})
    mem = res.setdefault("memory", {})
    for rnd in range(cfg.rounds):
        for cls in servers:
            s = cls().start()
            try:
                if rnd == 0:
                    time.sleep(0.2)
                    mem[s.name] = s.memory()
                if cfg.warmup:
                    http_load(s.port, 64, cfg.warmup)
                for conns in (64, 8):
                    _throughput_run(cfg, s, rnd, conns, out)
            finally:
                s.stop()
    for name, by in out.items():
        for key, d in by.items():
            d["rps"] = summary([r["rps"] for r in d["runs"]])
            d["p50_ms"] = summary([r["p50_ms"] for r in d["runs"]])
            d["p99_ms"] = summary([r["p99_ms"] for r in d["runs"]])
            d["errors"] = sum(r["errors"] for r in d["runs"])
            d["tool"] = d["runs"][0]["tool"]
            d["other_cpu_pct"] = summary([r["other_cpu_pct"]
                                          for r in d["runs"]])
            d["busiest_share"] = [None if r.get("busiest_share") is None
                                  else round(r["busiest_share"])
                                  for r in d["runs"]]
            d["runs"] = [round(r["rps"]) for r in d["runs"]]


def _throughput_run(cfg, s, rnd, conns, out):
    spread = {}

    def snapshot():
        spread.clear()
        spread.update(conn_spread(s.port, s.worker_pids()))

    r = measured(cfg, s, lambda: http_load(s.port, conns, cfg.seconds,
                                           during=snapshot))
    total = sum(spread.values())
    r["busiest_share"] = (100.0 * max(spread.values()) / total
                          if total else None)
    d = out.setdefault(s.name, {}).setdefault("c%d" % conns, {"runs": []})
    d["runs"].append(r)
    say("  throughput round %d %-14s c%-2d %8.0f req/s  p50 %.3f ms  "
        "p99 %.3f ms  errors %d  (others %.0f%% CPU; busiest worker holds "
        "%s%% of the conns)" % (
            rnd + 1, s.label, conns, r["rps"], r["p50_ms"], r["p99_ms"],
            r["errors"], r["other_cpu_pct"],
            "%.0f" % r["busiest_share"]
            if r["busiest_share"] is not None else "?"))


def sc_overhead(cfg, res):
    """forkpool's http worker against the same code in a bare program
    (bench/bare-http.c), one worker each (so that how the connections
    happen to spread over workers plays no part), wrk -t1 -c64,
    alternating, the order swapped every round."""
    out = res.setdefault("overhead", {})
    for rnd in range(cfg.overhead_rounds):
        order = ([Forkpool, BareHttp] if rnd % 2 == 0 else
                 [BareHttp, Forkpool])
        for cls in order:
            s = cls(workers=1).start()
            try:
                r = measured(cfg, s, lambda: http_load(
                    s.port, 64, cfg.overhead_s, threads=1))
            finally:
                s.stop()
            out.setdefault(s.name, []).append(r)
            say("  overhead round %d %-12s -w 1: %8.0f req/s  p50 %.3f ms"
                "  (others %.0f%% CPU)" % (rnd + 1, s.label, r["rps"],
                                           r["p50_ms"], r["other_cpu_pct"]))
    for name, runs in list(out.items()):
        out[name] = {"rps": summary([r["rps"] for r in runs]),
                     "p50_ms": summary([r["p50_ms"] for r in runs]),
                     "runs": [round(r["rps"]) for r in runs]}


def sc_syscalls(cfg, res):
    """System calls per request: `strace -c -f -p` on the one worker of
    each server (-w 1, so that it serves every request) while wrk -t1
    -c64 (keep-alive) runs; the calls strace counted over the requests
    wrk completed.  strace slows the worker down; the count per request
    is what is measured, not the speed."""
    out = res.setdefault("syscalls", {})
    if not have("strace"):
        out["skipped"] = "strace is not installed"
        say("  syscalls: skipped (strace is not installed)")
        return
    for cls in (Forkpool, BareHttp, Bare, Nginx):
        if not available(cls):
            continue
        s = cls(workers=1).start()
        try:
            out[s.name] = _strace_run(cfg, s)
        finally:
            s.stop()
        d = out[s.name]
        say("  syscalls %-12s %.2f per request (%d calls, %d requests; "
            "%s)" % (s.label, d["per_request"], d["calls"], d["requests"],
                     ", ".join("%s %.2f" % (k, v)
                               for k, v in d["top"].items())))


def _strace_run(cfg, s):
    (pid,) = s.worker_pids()
    path = os.path.join(tmpdir(), "strace.txt")
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-o", path, "-p", str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: tracer.poll() is not None or _traced(pid), 10.0,
                 "strace to attach to %d" % pid)
        if tracer.poll() is not None:
            raise RuntimeError("strace -p %d exited with %d (ptrace not "
                               "allowed?)" % (pid, tracer.returncode))
        r = http_load(s.port, 64, cfg.syscalls_s, threads=1)
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    calls = _strace_calls(open(path).read())
    total = sum(calls.values())
    n = max(1, r["requests"])
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return {"calls": total, "requests": r["requests"],
            "per_request": total / n,
            "top": {k: v / n for k, v in top}, "tool": r["tool"]}


def _traced(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"^TracerPid:\s+(\d+)", f.read(), re.M)
    return m is not None and int(m.group(1)) != 0


def _strace_calls(text):
    """{syscall: calls} from strace -c's table (% time, seconds,
    usecs/call, calls, [errors,] syscall)."""
    calls = {}
    for line in text.splitlines():
        f = line.split()
        if (len(f) in (5, 6) and f[-1] != "total" and
                re.match(r"[\d.]+$", f[0]) and f[3].isdigit()):
            calls[f[-1]] = int(f[3])
    return calls


def sc_echo(cfg, res):
    """forkpool's echo worker under echo-load: 64-byte ping-pong."""
    out = res.setdefault("echo", {})
    for rnd in range(cfg.rounds):
        s = ForkpoolEcho().start()
        try:
            for conns in (64, 8):
                r = measured(cfg, s, lambda: echo_load(
                    s.port, conns, cfg.echo_s))
                out.setdefault("c%d" % conns, []).append(r)
                say("  echo round %d c%-2d %8.0f msgs/s  p50 %.3f ms  "
                    "p99 %.3f ms  (others %.0f%% CPU)" % (
                        rnd + 1, conns, r["msgs_per_s"], r["p50_ms"],
                        r["p99_ms"], r["other_cpu_pct"]))
        finally:
            s.stop()
    for key, runs in list(out.items()):
        out[key] = {"msgs_per_s": summary([r["msgs_per_s"] for r in runs]),
                    "p50_ms": summary([r["p50_ms"] for r in runs]),
                    "p99_ms": summary([r["p99_ms"] for r in runs]),
                    "failed": sum(r["failed"] for r in runs),
                    "other_cpu_pct": summary([r["other_cpu_pct"]
                                              for r in runs]),
                    "bytes": runs[0]["bytes"]}


def sc_reuseport(cfg, res):
    """Spread of requests across workers, shared socket vs --reuse-port:
    the coefficient of variation (stddev / mean) of per-worker response
    counts (X-Pid, client side), with a new connection per request and
    with keep-alive connections.  forkpool's status ("requests") is taken
    too, as a check."""
    out = res.setdefault("reuseport", [])
    for n in cfg.reuse_workers:
        for mode in ("shared", "reuse-port"):
            args = ["--check-interval", "0.1"]
            if mode == "reuse-port":
                args.append("--reuse-port")
            s = Forkpool(workers=n, args=args).start()
            try:
                for close in (True, False):
                    out.append(_spread(cfg, s, n, mode, close))
            finally:
                s.stop()


def _spread(cfg, s, n, mode, close):
    before = {w["pid"]: w["requests"] for w in s.status()["workers"]}
    r = ka_client(s.port, 16 if close else 64, cfg.reuse_s, close=close)
    time.sleep(0.3)  # a heartbeat or two
    st = {w["pid"]: w["requests"] - before.get(w["pid"], 0)
          for w in s.status()["workers"]}
    counts = [r["pids"].get(str(p), 0) for p in s.worker_pids()]
    mean = statistics.mean(counts)
    sd = statistics.pstdev(counts)
    ssd = statistics.pstdev(list(st.values()))
    row = {"workers": n, "mode": mode,
           "conn": "new per request" if close else "keep-alive x64",
           "rps": r["rps"], "counts": sorted(counts), "stddev": sd,
           "cv": sd / mean if mean else None, "status_stddev": ssd}
    say("  reuseport -w %d %-10s %-16s %7.0f req/s  per worker %s  stddev "
        "%.0f (CV %.3f; status stddev %.0f)" % (
            n, mode, row["conn"], r["rps"], row["counts"], sd,
            row["cv"] or 0, ssd))
    return row


def sc_jsonrpc(cfg, res):
    """forkpool's jsonrpc worker, -w 2: 4 connections each sending 200
    pings at once and reading the replies, cfg.jsonrpc_rounds times."""
    runs = []
    for rnd in range(cfg.rounds):
        s = Forkpool(worker="jsonrpc").start()
        try:
            runs.append(jsonrpc_pings(s.port, conns=4, depth=200,
                                      rounds=cfg.jsonrpc_rounds))
        finally:
            s.stop()
        say("  jsonrpc round %d: 4 connections x 200 pipelined pings x %d:"
            " %.0f requests/s" % (rnd + 1, cfg.jsonrpc_rounds, runs[-1]))
    res["jsonrpc"] = {"rps": summary(runs), "conns": 4, "depth": 200,
                      "rounds": cfg.jsonrpc_rounds}
