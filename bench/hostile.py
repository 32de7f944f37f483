"""The master under attack (issue 11's figures): what a hostile or unlucky
environment costs it.  The suite's `hostile` scenario.

  stuck-log   stderr a pipe nobody reads, filled by 4 workers printing
              2 MB each, then a storm of SIGHUPs (300; --quick 30):
              `forkpool ctl status` latency over 100 calls (--quick 20):
              p50, p99, max; then the pipe is read again and the master's
              own count of the records it dropped is read back
  emfile      the master's RLIMIT_NOFILE at its fd count + 4 and 10 idle
              control connections: the master's CPU over 10 s (--quick 2)
  orphan      a worker's child that writes "y" to the worker's stdout for
              ever, the worker SIGKILLed: the master's CPU over 10 s after
              (--quick 2)
  output      64 workers printing 300 lines of 16 KiB each: the master's
              largest RSS (sampled every 20 ms) and `ctl output` size
"""
import fcntl
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import termios
import threading
import time

from common import (BIN, CHAOS, CpuShare, free_port, kill_session, pct,
                    rss_kb, say, spawn, tmpdir, wait_for)

DROPPED = re.compile(rb"master: (\d+) records to stderr were dropped")
_started = []  # the masters of the running part, stopped after it


def start(args, **kw):
    """A master on a free port, in a session of its own (killed at exit
    if it outlives its scenario)."""
    p = spawn([BIN, "-b", "127.0.0.1:%d" % free_port()] + args,
              stdin=subprocess.DEVNULL, **kw)
    _started.append(p)
    return p


def ctl(sock, *args, timeout=30):
    """`forkpool ctl`: (seconds it took, CompletedProcess)."""
    t0 = time.monotonic()
    r = subprocess.run([BIN, "ctl", "--control", sock, "--timeout", "10"] +
                       list(args), capture_output=True, text=True,
                       timeout=timeout)
    return time.monotonic() - t0, r


def stop(p, timeout=30):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout)


def pipe_fill(fd):
    """Bytes waiting in the pipe (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4),
                          "little")


def stuck_log(cfg, d):
    """The workers print more than the pipe (64 KiB) and the master's
    queue for it (1 MiB, src/sink.c) hold together.  While the pipe takes
    nothing the master stops reading the workers, and after 1 s of that it
    gives the pipe up: it reads again and drops what does not fit.  The
    master looks every second (SINK_STUCK) for a second without progress,
    so giving up takes 1 to 2 s after the last byte went into the pipe:
    the SIGHUPs and calls start 2.5 s after the pipe is full.  (Started
    1 s after the control socket appeared, with 400 kB per worker as the
    first version did, the master had not given up in about 1 run in 3,
    nothing was dropped, and no count was ever logged.)"""
    sock = os.path.join(d, "stuck.sock")
    r, w = os.pipe()
    try:
        p = start(["-w", "4", "--control", sock, "-k", CHAOS, "--",
                   "--lines", "10000:200"], stdout=w, stderr=w)
    finally:
        os.close(w)
    got = bytearray()
    try:
        wait_for(lambda: os.path.exists(sock), what="the control socket")
        wait_for(lambda: pipe_fill(r) >= 60000, what="a full stderr pipe")
        time.sleep(2.5)  # the master gives the pipe up
        for _ in range(cfg.hostile_sighups):
            os.kill(p.pid, signal.SIGHUP)
        took = []
        for _ in range(cfg.hostile_calls):
            t, res = ctl(sock, "status")
            if res.returncode != 0:
                raise RuntimeError("ctl status failed: %s" % res.stderr)
            took.append(t * 1e3)

        def drain():
            while True:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    return
                got.extend(chunk)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            wait_for(lambda: DROPPED.search(got), timeout=60,
                     what="the dropped-records report")
        except RuntimeError as e:
            raise RuntimeError("%s; %d bytes read from the pipe, none "
                               "dropped?" % (e, len(got)))
        stop(p)
        reader.join(10)
    finally:
        os.close(r)
    return {"sighups": cfg.hostile_sighups, "calls": len(took),
            "lines": "4 workers x 10000 x 200 B",
            "ctl_status_ms_p50": statistics.median(took),
            "ctl_status_ms_p99": pct(took, 99),
            "ctl_status_ms_max": max(took),
            "dropped_records_reported": int(DROPPED.search(got).group(1))}


def emfile(cfg, d):
    sock = os.path.join(d, "emfile.sock")
    p = start(["-w", "1", "--control", sock, "-k", "echo"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(sock), what="the control socket")
    time.sleep(0.5)
    limit = len(os.listdir("/proc/%d/fd" % p.pid)) + 4
    resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (limit, limit))
    held = []
    try:
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(s)
            s.connect(sock)
        time.sleep(0.5)
        share = CpuShare(p.pid)
        time.sleep(cfg.hostile_window_s)
        cpu = share.end()
    finally:
        for s in held:
            s.close()
    stop(p)
    return {"window_s": cfg.hostile_window_s, "master_cpu_pct": cpu}


def orphan(cfg, d):
    sock = os.path.join(d, "orphan.sock")
    log = os.path.join(d, "orphan.log")
    with open(log, "wb") as err:
        p = start(["-w", "1", "--control", sock, "-k", CHAOS, "--",
                   "--orphan-writer", os.path.join(d, "orphan-once")],
                  stdout=err, stderr=err)

    def writer():
        with open(log, "rb") as f:
            m = re.search(rb"chaos worker 0 pid (\d+): orphan writer pid "
                          rb"(\d+)", f.read())
        return m and (int(m.group(1)), int(m.group(2)))

    def let_go():
        with open(log, "rb") as f:
            return b"no longer reading it" in f.read()

    worker, _ = wait_for(writer, what="the orphan writer")
    time.sleep(0.5)  # it floods, the worker still alive
    os.kill(worker, signal.SIGKILL)
    wait_for(let_go, what="the master letting the pipe go")
    size0 = os.path.getsize(log)
    share = CpuShare(p.pid)
    time.sleep(cfg.hostile_window_s)
    cpu = share.end()
    _, res = ctl(sock, "status")
    grew = os.path.getsize(log) - size0
    stop(p)
    return {"window_s": cfg.hostile_window_s, "master_cpu_pct": cpu,
            "log_growth_bytes": grew, "ctl_status_ok": res.returncode == 0}


def output(cfg, d):
    sock = os.path.join(d, "output.sock")
    n = 64
    p = start(["-w", str(n), "--control", sock, "-k", CHAOS, "--",
               "--lines", "300:16384", "--say", "done"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(sock), what="the control socket")
    peak = 0

    def all_done():
        nonlocal peak
        peak = max(peak, rss_kb(p.pid))
        _, res = ctl(sock, "--json", "status")
        if res.returncode != 0 or json.loads(res.stdout)["live"] < n:
            return False
        for slot in range(n):
            _, res = ctl(sock, "--json", "output", str(slot), "1")
            if json.loads(res.stdout)["lines"] != ["done"]:
                return False
        return True

    deadline = time.monotonic() + 120
    while not all_done():
        if time.monotonic() > deadline:
            raise RuntimeError("the %d workers did not finish printing" % n)
        for _ in range(25):
            peak = max(peak, rss_kb(p.pid))
            time.sleep(0.02)
    _, res = ctl(sock, "output", "0", "100000")
    stop(p, 60)
    return {"workers": n, "lines": 300, "line_bytes": 16384,
            "master_rss_kb_peak": peak,
            "ctl_output_bytes": len(res.stdout.encode())}


PARTS = [("stuck_log", stuck_log), ("emfile", emfile), ("orphan", orphan),
         ("output", output)]


def sc_hostile(cfg, res):
    if not os.path.exists(CHAOS):
        raise RuntimeError("%s is not built (meson -Dtests=enabled)" % CHAOS)
    out = res.setdefault("hostile", {})
    d = tmpdir()
    for name, fn in PARTS:
        try:
            out[name] = r = fn(cfg, d)
        finally:
            while _started:
                p = _started.pop()
                kill_session(p.pid)
                p.wait()
        say("  hostile %-9s %s" % (name, ", ".join(
            "%s %s" % (k, round(v, 3) if isinstance(v, float) else v)
            for k, v in r.items())))
