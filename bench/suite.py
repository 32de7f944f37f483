"""The suite: its scenarios in order, how long each runs (full or
--quick), the machine and versions, and the results file (--only merges
into it)."""
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import time
from datetime import datetime, timezone

from common import (BIN, PY, QUICK_RESULTS, RESULTS, ROOT, WORKERS, build,
                    build_tools, install, say)
from hostile import sc_hostile
from render import render_tables
from sc_http import sc_echo, sc_jsonrpc, sc_overhead, sc_reuseport
from sc_http import sc_syscalls, sc_throughput
from sc_deploy import sc_deploy
from sc_upgrade import sc_upgrade
from sc_library import sc_events, sc_messages
from sc_lifecycle import sc_reload, sc_respawn, sc_shutdown
from sc_master import sc_logs, sc_scale
from servers import HTTP_SERVERS, available

SCENARIOS = [
    ("throughput", sc_throughput),
    ("overhead", sc_overhead),
    ("syscalls", sc_syscalls),
    ("echo", sc_echo),
    ("respawn", sc_respawn),
    ("reload", sc_reload),
    ("shutdown", sc_shutdown),
    ("scale", sc_scale),
    ("logs", sc_logs),
    ("reuseport", sc_reuseport),
    ("jsonrpc", sc_jsonrpc),
    ("hostile", sc_hostile),
    ("deploy", sc_deploy),
    ("upgrade", sc_upgrade),
    ("messages", sc_messages),
    ("events", sc_events),
]
NAMES = [n for n, _ in SCENARIOS]


class Config:
    def __init__(self, quick):
        self.quick = quick
        if quick:
            self.rounds, self.seconds, self.warmup = 1, 1, 0
            self.overhead_rounds, self.overhead_s, self.echo_s = 2, 1, 1
            self.syscalls_s = 1
            self.messages_n = 20000
            self.kills, self.peer_kills = 10, 3
            self.ka_conns, self.reload_s = 16, 1.5
            self.scale_sizes, self.scale_rounds, self.idle_s = [256], 1, 2
            self.records = 5000
            self.reuse_workers, self.reuse_s = [2], 0.5
            self.jsonrpc_rounds = 10
            self.hostile_sighups, self.hostile_calls = 30, 20
            self.hostile_window_s = 2
            self.budget = [0]
        else:
            self.rounds, self.seconds, self.warmup = 3, 10, 1
            self.overhead_rounds, self.overhead_s, self.echo_s = 6, 5, 5
            self.syscalls_s = 5
            self.messages_n = 200000
            self.kills, self.peer_kills = 200, 50
            self.ka_conns, self.reload_s = 32, 5.0
            # 64: the pool the older `scripts/bench idle` measured.
            self.scale_sizes = [64, 256, 1024, 4096]
            self.scale_rounds, self.idle_s = 3, 10
            self.records = 100000
            self.reuse_workers, self.reuse_s = [2, 8], 3.0
            self.jsonrpc_rounds = 100
            self.hostile_sighups, self.hostile_calls = 300, 100
            self.hostile_window_s = 10
            self.budget = [4]  # repeated runs per scenario, at most
        # A run during which other processes took more than this share of
        # one CPU (%) is repeated while the budget lasts.
        self.max_other = 15.0


def versions():
    def cmd(args, pattern):
        try:
            p = subprocess.run(args, capture_output=True, text=True,
                               timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(pattern, p.stdout + p.stderr)
        return m.group(1) if m else None

    return {
        "forkpool": cmd([BIN, "-V"], r"forkpool (\S+)"),
        "libevent": cmd(["pkg-config", "--modversion", "libevent"],
                        r"(\S+)"),
        "nginx": cmd([shutil.which("nginx") or "/usr/sbin/nginx", "-v"],
                     r"nginx/(\S+)"),
        "gunicorn": cmd([PY, "-m", "gunicorn", "--version"],
                        r"version (\S+?)\)"),
        "python": cmd([PY, "--version"], r"Python (\S+)"),
        "node": cmd(["node", "--version"], r"v(\S+)"),
        "wrk": cmd(["wrk", "--version"], r"wrk (\S+)"),
        "gcc": cmd(["cc", "-dumpfullversion"], r"(\S+)"),
        "git": cmd(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                   r"(\S+)"),
    }


def machine():
    model = None
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = [l for l in open("/proc/meminfo") if l.startswith("MemTotal")]
    return {"nproc": os.cpu_count(), "cpu": model,
            "kernel": platform.release(),
            "mem_gib": round(int(mem[0].split()[1]) / 1048576, 1),
            "loadavg_start": os.getloadavg()[0],
            "nofile_hard": _nofile_hard()}


def _nofile_hard():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def parse_only(text):
    if not text:
        return None
    only = set(text.split(","))
    if not only <= set(NAMES):
        raise SystemExit("bench: --only takes some of %s" % ", ".join(NAMES))
    return only


def run(quick, only):
    """The suite (the scenarios in `only`, or all): 0 if each produced
    numbers, else 1."""
    cfg = Config(quick)
    if not quick:
        install(["wrk", "nginx", "gunicorn", "gnuplot", "strace"])
    build()
    build_tools()
    skipped = [c.label for c in HTTP_SERVERS if not available(c)]
    if skipped:
        say("bench: skipping %s (not installed)" % ", ".join(skipped))
    res = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "quick": quick, "machine": machine(), "versions": versions(),
           "workers": WORKERS, "skipped": skipped, "errors": {},
           "config": dict(vars(cfg)), "seconds": {}, "measured": {}}
    t_all = time.monotonic()
    for name, fn in SCENARIOS:
        if only and name not in only:
            continue
        say("== %s" % name)
        cfg.budget = [0 if cfg.quick else 4]
        t0 = time.monotonic()
        try:
            fn(cfg, res)
        except (RuntimeError, subprocess.CalledProcessError, OSError,
                ValueError, KeyError, json.JSONDecodeError) as e:
            res["errors"][name] = str(e)[:2000]
            say("bench: %s failed: %s" % (name, e))
        res["seconds"][name] = round(time.monotonic() - t0, 1)
        say("   (%s: %.0f s)" % (name, res["seconds"][name]))
        res["measured"][name] = {"date": res["date"],
                                 "git": res["versions"].get("git")}
    res["machine"]["loadavg_end"] = os.getloadavg()[0]
    res["seconds"]["total"] = round(time.monotonic() - t_all, 1)
    print()
    print(render_tables(res))
    path = QUICK_RESULTS if quick else RESULTS
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if only and not quick and os.path.exists(path):
        merge(res, json.load(open(path)), only)
    with open(path, "w") as f:
        json.dump(rounded(res), f, indent=1, sort_keys=True)
        f.write("\n")
    say("bench: results in %s" % os.path.relpath(path, ROOT))
    # Every scenario asked for must have produced numbers.
    missing = [n for n in NAMES if (not only or n in only) and
               (n in res["errors"] or not res.get(n))]
    if missing:
        say("bench: no numbers from %s" % ", ".join(missing))
        return 1
    return 0


def merge(res, old, only):
    """Some scenarios again: the others' numbers are kept from `old`."""
    for name in NAMES:
        if name in only or name not in old:
            continue
        res[name] = old[name]
        if name == "throughput" and "memory" in old:
            res["memory"] = old["memory"]
        if name in old.get("errors", {}):
            res["errors"][name] = old["errors"][name]
        if name in old.get("seconds", {}):
            res["seconds"][name] = old["seconds"][name]
        res["measured"][name] = old.get("measured", {}).get(name, {
            "date": old.get("date"),
            "git": old.get("versions", {}).get("git")})
    res["seconds"]["total"] = round(sum(
        v for k, v in res["seconds"].items() if k != "total"), 1)


def rounded(o):
    if isinstance(o, float):
        return round(o, 3) if abs(o) < 1000 else round(o, 1)
    if isinstance(o, dict):
        return {k: rounded(v) for k, v in o.items()}
    if isinstance(o, list):
        return [rounded(v) for v in o]
    return o
