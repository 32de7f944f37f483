"""Scenarios of the library's messages and events: messages per second
between the master and a worker (bench/messages.c), and the master's CPU
during a scale-up to 256 workers with and without a `ctl events` client
attached."""
import json
import os
import subprocess
import time

from common import (BIN, TOOL, cpu_seconds, say, summary, tmpdir, wait_for)
from servers import ForkpoolEcho


def sc_messages(cfg, res):
    """bench/messages N: N messages of 64 bytes master -> worker, then
    worker -> master, at most 128 unacknowledged, one worker."""
    runs = []
    for rnd in range(cfg.rounds):
        out = subprocess.run([TOOL["messages"], str(cfg.messages_n), "64"],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError("bench/messages failed: %s" % out.stderr)
        r = json.loads(out.stdout)
        runs.append(r)
        say("  messages round %d: %d x 64 bytes: master -> worker %.0f/s, "
            "worker -> master %.0f/s" % (rnd + 1, r["n"], r["m2w_per_s"],
                                         r["w2m_per_s"]))
    res["messages"] = {
        "n": cfg.messages_n, "size": 64,
        "m2w_per_s": summary([r["m2w_per_s"] for r in runs]),
        "w2m_per_s": summary([r["w2m_per_s"] for r in runs])}


def sc_events(cfg, res):
    """forkpool -w 1 echo, then `ctl scale 256` until every worker is
    ready: the master's CPU seconds (schedstat) from the scale to the last
    "ready", without and with `forkpool ctl events` attached, alternating."""
    out = res.setdefault("events", {"workers": 256, "rounds": []})
    for rnd in range(cfg.rounds):
        for watch in (False, True):
            out["rounds"].append(_events_round(256, watch))
            r = out["rounds"][-1]
            say("  events round %d, %s: 256 workers ready in %.0f ms, master "
                "CPU %.1f ms%s" % (
                    rnd + 1, "ctl events attached" if watch else "no watcher",
                    r["wall_ms"], r["master_cpu_ms"],
                    ", %d event lines" % r["lines"] if watch else ""))
    for watch in (False, True):
        rows = [r for r in out["rounds"] if r["watch"] == watch]
        key = "with_events" if watch else "without"
        out[key] = {"master_cpu_ms": summary([r["master_cpu_ms"]
                                              for r in rows]),
                    "wall_ms": summary([r["wall_ms"] for r in rows])}
    out.pop("rounds")


def _events_round(n, watch):
    s = ForkpoolEcho(workers=1).start()
    ev = None
    lines = os.path.join(tmpdir(), "events.jsonl")
    try:
        if watch:
            ev = subprocess.Popen([BIN, "ctl", "--control", s.control,
                                   "events"], stdout=open(lines, "w"),
                                  stderr=subprocess.DEVNULL)
            # Attached once its subscription is answered: the next
            # event reaches it.
            time.sleep(0.3)
        cpu0 = cpu_seconds(s.proc.pid)
        t0 = time.monotonic()
        subprocess.run([BIN, "ctl", "--control", s.control, "scale",
                        str(n)], check=True, capture_output=True,
                       timeout=60)
        s.workers = n
        wait_for(s.up, 60 + n / 10, "%d workers ready" % n, step=0.05)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(s.proc.pid) - cpu0
        got = 0
        if watch:
            wait_for(lambda: _count(lines, '"ready"') >= n - 1, 10,
                     "the ready events")
            got = _count(lines, "\n")
        return {"watch": watch, "wall_ms": wall * 1e3,
                "master_cpu_ms": cpu * 1e3, "lines": got}
    finally:
        s.stop()
        if ev is not None:
            try:
                ev.wait(10)
            except subprocess.TimeoutExpired:
                ev.kill()
                ev.wait()


def _count(path, text):
    with open(path) as f:
        return f.read().count(text)
