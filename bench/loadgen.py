"""The load tools: wrk (or bench/ka-client where wrk is missing),
bench/ka-client, bench/echo-load, a pipelined JSON-RPC client; how
connections spread over workers; and how much CPU the rest of the
machine took during a run."""
import json
import os
import re
import socket
import threading
import time

from common import (TOOL, Contention, finish_tool, have, run_tool, say,
                    start_tool)


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def conn_spread(port, pids):
    """How many established TCP connections to `port` each of `pids`
    holds (from /proc/net/tcp and the processes' fds)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[3] == "01" and int(p[1].rsplit(":", 1)[1], 16) == port:
                inodes.add("socket:[%s]" % p[9])
    counts = {}
    for pid in pids:
        n = 0
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                    n += 1
            except OSError:
                pass
        counts[pid] = n
    return counts


def run_with(cmd, seconds, during):
    """run_tool(), calling during() halfway through the run."""
    if during is None:
        return run_tool(cmd, timeout=seconds + 30)
    p = start_tool(cmd)
    time.sleep(seconds / 2)
    during()
    return finish_tool(p, cmd, seconds + 30)


def wrk(port, conns, seconds, threads=2, during=None):
    out = run_with(["wrk", "-t%d" % threads, "-c%d" % conns,
                    "-d%ds" % max(1, round(seconds)), "--latency",
                    "http://127.0.0.1:%d/" % port], seconds, during)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors,
            "requests": requests, "tool": "wrk"}


def ka_cmd(port, conns, seconds, close=False, stop_on_refuse=False,
           bucket_ms=50):
    cmd = [TOOL["ka-client"], "-p", str(port), "-c", str(conns), "-d",
           "%.3f" % seconds, "-b", str(bucket_ms)]
    if close:
        cmd.append("-C")
    if stop_on_refuse:
        cmd.append("-s")
    return cmd


def ka_client(port, conns, seconds, **kw):
    return json.loads(run_tool(ka_cmd(port, conns, seconds, **kw),
                               timeout=seconds + 30))


def http_load(port, conns, seconds, during=None, threads=2):
    """wrk, or ka-client where wrk is missing (--quick, on a machine where
    nothing installed wrk: scripts/test must pass on a bare one)."""
    if have("wrk"):
        return wrk(port, conns, seconds, threads=threads, during=during)
    r = json.loads(run_with(ka_cmd(port, conns, seconds), seconds, during))
    return {"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "errors": r["dropped"] + r["refused"] + r["errors"],
            "requests": r["ok"], "tool": "ka-client"}


def echo_load(port, conns, seconds, size=64, threads=2):
    return json.loads(run_tool(
        [TOOL["echo-load"], "-p", str(port), "-c", str(conns), "-m",
         str(size), "-t", str(threads), "-d", "%.3f" % seconds],
        timeout=seconds + 30))


def jsonrpc_pings(port, conns=4, depth=200, rounds=100):
    """Each of `conns` connections sends `depth` pings at once, reads the
    replies, and does so `rounds` times: requests/s over all."""
    counts, errors = [], []

    def client():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            burst = b"".join(
                b'{"jsonrpc":"2.0","method":"ping","id":%d}\n' % i
                for i in range(depth))
            n = 0
            for _ in range(rounds):
                s.sendall(burst)
                got = 0
                while got < depth:
                    data = s.recv(1 << 20)
                    if not data:
                        raise RuntimeError("jsonrpc connection closed")
                    got += data.count(b"\n")
                n += got
            s.close()
            counts.append(n)
        except (OSError, RuntimeError) as e:
            errors.append(str(e))

    threads = [threading.Thread(target=client) for _ in range(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.monotonic()
    if errors:
        raise RuntimeError("jsonrpc client: %s" % errors[0])
    return sum(counts) / (t1 - t0)


def measured(cfg, s, fn):
    """fn() with the CPU the rest of the machine took meanwhile; while that
    passes cfg.max_other (% of one CPU) the run is repeated, a few times
    per scenario (cfg.budget), and the least disturbed run is kept."""
    best = None
    while True:
        c = Contention([s.proc.pid])
        r = fn()
        r["other_cpu_pct"] = c.end()
        if best is None or r["other_cpu_pct"] < best["other_cpu_pct"]:
            best = r
        if r["other_cpu_pct"] <= cfg.max_other or cfg.budget[0] <= 0:
            return best
        cfg.budget[0] -= 1
        say("  (other processes took %.0f%% of a CPU: again)" %
            r["other_cpu_pct"])
        time.sleep(2)
