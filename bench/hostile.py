#!/usr/bin/python3
"""The master under attack (issue 11's figures): what a hostile or unlucky
environment costs it.

    scripts/bench hostile          (or: bench/hostile.py --bin B --chaos C)

  stuck-log   stderr a pipe nobody reads, filled by the workers, then 300
              SIGHUPs: `forkpool ctl status` latency over 100 calls (p50,
              p99, max), then the pipe is read again and the master's own
              count of the records it dropped is read back
  emfile      the master's RLIMIT_NOFILE at its fd count + 4 and 10 idle
              control connections: the master's CPU over 10 s
  orphan      a worker's child that writes "y" to the worker's stdout for
              ever, the worker SIGKILLed: the master's CPU over 10 s after
  output      64 workers printing 300 lines of 16 KiB each: the master's
              largest RSS (sampled every 20 ms) and `ctl output` size

Every process it starts is killed at the end.
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=30, what="a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"hostile: timed out waiting for {what}")


class Bench:
    def __init__(self, binary, chaos):
        self.bin = binary
        self.chaos = chaos
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="fp-hostile-")

    def start(self, args, **kw):
        p = subprocess.Popen([self.bin, "-b", f"127.0.0.1:{free_port()}"] + args,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             close_fds=True, **kw)
        self.procs.append(p)
        return p

    def ctl(self, sock, *args, timeout=30):
        t0 = time.monotonic()
        r = subprocess.run([self.bin, "ctl", "--control", sock, "--timeout", "10"]
                           + list(args), capture_output=True, text=True,
                           timeout=timeout)
        return time.monotonic() - t0, r

    def cleanup(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            for q in os.listdir("/proc"):
                if q.isdigit():
                    try:
                        if os.getsid(int(q)) == p.pid:
                            os.kill(int(q), signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def sock(self, name):
        return os.path.join(self.dir, name)

    # -- scenarios --

    def stuck_log(self):
        sock = self.sock("stuck.sock")
        r, w = os.pipe()
        p = self.start(["-w", "4", "--control", sock, "-k", self.chaos, "--",
                        "--lines", "2000:200"], stdout=w, stderr=w)
        os.close(w)
        wait_for(lambda: os.path.exists(sock), what="the control socket")
        time.sleep(1)  # the workers fill the pipe
        for _ in range(300):
            os.kill(p.pid, signal.SIGHUP)
        took = []
        for _ in range(100):
            t, res = self.ctl(sock, "status")
            if res.returncode != 0:
                raise SystemExit(f"hostile: ctl status failed: {res.stderr}")
            took.append(t * 1e3)
        got = bytearray()

        def drain():
            while True:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    return
                got.extend(chunk)
        threading.Thread(target=drain, daemon=True).start()
        wait_for(lambda: re.search(rb"master: (\d+) records to stderr were dropped", got),
                 what="the dropped-records report")
        dropped = int(re.search(rb"master: (\d+) records to stderr were dropped",
                                got).group(1))
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        took.sort()
        return {"ctl_status_ms_p50": round(statistics.median(took), 2),
                "ctl_status_ms_p99": round(took[98], 2),
                "ctl_status_ms_max": round(took[-1], 2),
                "dropped_records_reported": dropped}

    def emfile(self):
        sock = self.sock("emfile.sock")
        p = self.start(["-w", "1", "--control", sock, "-k", "echo"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(sock), what="the control socket")
        time.sleep(0.5)
        limit = len(os.listdir(f"/proc/{p.pid}/fd")) + 4
        resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (limit, limit))
        held = []
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            held.append(s)
        time.sleep(0.5)
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(10)
        share = (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
        for s in held:
            s.close()
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        return {"master_cpu_pct_10s": round(100 * share, 3)}

    def orphan(self):
        sock = self.sock("orphan.sock")
        err = open(os.path.join(self.dir, "orphan.log"), "wb")
        p = self.start(["-w", "1", "--control", sock, "-k", self.chaos, "--",
                        "--orphan-writer", os.path.join(self.dir, "orphan-once")],
                       stdout=err, stderr=err)
        log = os.path.join(self.dir, "orphan.log")

        def writer():
            m = re.search(rb"chaos worker 0 pid (\d+): orphan writer pid (\d+)",
                          open(log, "rb").read())
            return m and (int(m.group(1)), int(m.group(2)))
        worker, _ = wait_for(writer, what="the orphan writer")
        time.sleep(0.5)  # it floods, the worker still alive
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: b"no longer reading it" in open(log, "rb").read(),
                 what="the master letting the pipe go")
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        size0 = os.path.getsize(log)
        time.sleep(10)
        share = (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
        _, res = self.ctl(sock, "status")
        grew = os.path.getsize(log) - size0
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        err.close()
        return {"master_cpu_pct_10s_after": round(100 * share, 3),
                "log_growth_bytes_after": grew,
                "ctl_status_ok": res.returncode == 0}

    def output(self):
        sock = self.sock("output.sock")
        p = self.start(["-w", "64", "--control", sock, "-k", self.chaos, "--",
                        "--lines", "300:16384", "--say", "done"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(sock), what="the control socket")
        peak = 0

        def all_done():
            nonlocal peak
            peak = max(peak, rss_kib(p.pid))
            _, res = self.ctl(sock, "--json", "status")
            if res.returncode != 0 or json.loads(res.stdout)["live"] < 64:
                return False
            for slot in range(64):
                _, res = self.ctl(sock, "--json", "output", str(slot), "1")
                if json.loads(res.stdout)["lines"] != ["done"]:
                    return False
            return True
        deadline = time.monotonic() + 120
        while not all_done():
            if time.monotonic() > deadline:
                raise SystemExit("hostile: the 64 workers did not finish printing")
            for _ in range(25):
                peak = max(peak, rss_kib(p.pid))
                time.sleep(0.02)
        _, res = self.ctl(sock, "output", "0", "100000")
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        return {"master_rss_kib_peak": peak,
                "ctl_output_bytes": len(res.stdout.encode())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--chaos", required=True)
    ap.add_argument("--only", help="comma-separated: stuck-log,emfile,orphan,output")
    a = ap.parse_args()
    b = Bench(a.bin, a.chaos)
    scenarios = [("stuck-log", b.stuck_log), ("emfile", b.emfile),
                 ("orphan", b.orphan), ("output", b.output)]
    only = set(a.only.split(",")) if a.only else None
    results = {}
    try:
        for name, fn in scenarios:
            if only and name not in only:
                continue
            results[name] = fn()
            print(f"{name:10} {json.dumps(results[name])}", flush=True)
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
