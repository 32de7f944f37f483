"""What every part of scripts/bench shares: the paths, the processes it
starts (each in a session of its own, all killed at exit), building the
project and bench/*.c, installing peers, and small /proc readers."""
import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# FORKPOOL_BIN: measure another build of forkpool (an experiment).
BIN = os.environ.get("FORKPOOL_BIN",
                     os.path.join(ROOT, "build", "cli", "forkpool"))
CHAOS = os.path.join(ROOT, "build", "tests", "workers", "chaos.so")
BENCH = os.path.join(ROOT, "bench")
PEERS = os.path.join(BENCH, "peers")
RESULTS = os.path.join(BENCH, "results", "last.json")
QUICK_RESULTS = os.path.join(ROOT, "build", "bench-quick.json")
DOCS = os.path.join(ROOT, "docs")
READY = re.compile(r"^(\S+) info master: worker (\d+) pid (\d+) ready"
                   r"(?: \(([\d.]+) ms after fork\))?")
STARTING = re.compile(r"^(\S+) info master: master pid \d+ starting")
PY = "/usr/bin/python3"  # Debian's, the one with python3-gunicorn
WORKERS = 2


def say(*a):
    print(*a, flush=True)


# ---- processes: everything started is stopped ---------------------------

_sessions = []  # pids of the processes started with a session of their own
_tmpdirs = []
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the bench


def spawn(cmd, **kw):
    """Start cmd in a new session (so its whole tree can be found and
    stopped), dying with this script."""
    p = subprocess.Popen(cmd, start_new_session=True,
                         preexec_fn=_child_setup, **kw)
    _sessions.append(p.pid)
    return p


def session_pids(sid):
    """The processes of session `sid` (which we started)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...  (not the process group:
        # forkpool gives each worker a group of its own)
        if int(fields[3]) == sid:
            out.append(int(d))
    return out


def kill_session(sid):
    for _ in range(50):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(sid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)


def _cleanup():
    for sid in _sessions:
        kill_session(sid)
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)


def _on_signal(sig, frame):
    raise SystemExit(128 + sig)


def guard():
    """Stop everything started at exit: a normal one, Ctrl-C (SIGINT, even
    when it came in ignored, as it does for a background job of a shell
    script), SIGTERM or SIGHUP."""
    atexit.register(_cleanup)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def tmpdir():
    d = tempfile.mkdtemp(prefix="fp-bench-")
    _tmpdirs.append(d)
    return d


def start_tool(cmd):
    """A load tool started in its own session, stdout and stderr piped;
    finish_tool() collects it."""
    return spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)


def run_tool(cmd, timeout):
    """Run a load tool to its end; its output (stdout)."""
    return finish_tool(start_tool(cmd), cmd, timeout)


def finish_tool(p, cmd, timeout):
    """Wait for start_tool()'s `p`: its stdout, or RuntimeError if it runs
    over `timeout` s (then it is killed) or fails."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(p.pid)
        raise RuntimeError("%s timed out" % os.path.basename(cmd[0]))
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (
            os.path.basename(cmd[0]), p.returncode, err.strip()[-500:]))
    return out


def wait_for(pred, timeout=30.0, what="a condition", step=0.02):
    """pred()'s first true value, polled every `step` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError("timed out (%.0f s) waiting for %s" % (timeout, what))


# ---- building and installing ---------------------------------------------


def build():
    if not os.path.isdir(os.path.join(ROOT, "build")):
        subprocess.run(["meson", "setup", "build"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["meson", "compile", "-C", "build"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


TOOLS = {
    "ka-client": ("ka-client.c", []),
    "echo-load": ("echo-load.c", ["-pthread"]),
    "bare-evhttp": ("bare-evhttp.c", ["LIBEVENT"]),
    # The http worker's sources and llhttp: meson's build only.
    "bare-http": ("bare-http.c", None),
    "messages": ("messages.c", None),
}
TOOL = {}


def build_tools():
    """bench/*.c: meson's build/bench/X if it is there and newer than its
    source, else cc into build/bench-cc/."""
    out = os.path.join(ROOT, "build", "bench-cc")
    os.makedirs(out, exist_ok=True)
    for name, (src, extra) in TOOLS.items():
        src = os.path.join(BENCH, src)
        # The sources' newest time, the header they share included.
        newest = max(os.path.getmtime(os.path.join(BENCH, f))
                     for f in (src, "load.h", "bare.h"))
        meson_bin = os.path.join(ROOT, "build", "bench", name)
        if extra is None or (os.path.exists(meson_bin) and
                             os.path.getmtime(meson_bin) >= newest):
            TOOL[name] = meson_bin
            continue
        target = os.path.join(out, name)
        if (not os.path.exists(target) or
                os.path.getmtime(target) < newest):
            flags = []
            for e in extra:
                if e == "LIBEVENT":
                    flags += subprocess.run(
                        ["pkg-config", "--cflags", "--libs", "libevent"],
                        check=True, capture_output=True,
                        text=True).stdout.split()
                else:
                    flags.append(e)
            subprocess.run(["cc", "-std=gnu11", "-O2", "-g", "-Wall",
                            "-Wextra", "-D_GNU_SOURCE", "-o", target, src] +
                           flags, check=True)
        TOOL[name] = target


PACKAGES = {  # command -> Debian package
    "wrk": "wrk",
    "nginx": "nginx-light",
    "gunicorn": "python3-gunicorn",
    "gnuplot": "gnuplot-nox",
    "strace": "strace",
}


def have(cmd):
    if cmd == "gunicorn":
        return subprocess.run([PY, "-c", "import gunicorn"],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    if cmd == "nginx":
        return (shutil.which("nginx") is not None or
                os.path.exists("/usr/sbin/nginx"))
    return shutil.which(cmd) is not None


def install(cmds):
    missing = [PACKAGES[c] for c in cmds if not have(c)]
    if not missing:
        return
    say("bench: installing %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if subprocess.run(cmd + missing, env=env, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run(cmd + missing, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    # Debian starts the nginx service it installs (on port 80): this
    # script runs its own nginx, and leaves no other one running.
    if "nginx-light" in missing:
        subprocess.run(["sh", "-c", "(service nginx stop || "
                        "invoke-rc.d nginx stop) >/dev/null 2>&1"])


# ---- numbers ----------------------------------------------------------------


def log_time(stamp):
    """The master's ISO-8601 UTC stamp as a Unix time (float)."""
    dt = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=timezone.utc).timestamp()


def pct(values, p):
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def summary(values):
    """Median, min, max and count of a list (None if it is empty)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values),
            "p90": pct(values, 90), "p99": pct(values, 99)}


# ---- /proc ------------------------------------------------------------------


def ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_seconds(pid):
    """CPU time of pid (all its threads), in seconds: from schedstat's
    nanoseconds where the kernel has it (CONFIG_SCHED_INFO), else from
    /proc/PID/stat's clock ticks, whose 10 ms steps are 0.1 % of a CPU over
    10 s, too coarse for an idle master."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return ticks(pid) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """The share of one CPU (%) that pid takes from now to .end()."""

    def __init__(self, pid):
        self.pid = pid
        self.t0, self.c0 = time.monotonic(), cpu_seconds(pid)

    def end(self):
        c, t = cpu_seconds(self.pid), time.monotonic()
        self.seconds = t - self.t0
        return 100.0 * (c - self.c0) / self.seconds


def cpu_busy():
    """Jiffies the machine's CPUs spent running something: user, nice,
    system and steal (not idle, iowait, irq and softirq, which no process
    is charged with)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)


class Contention:
    """How much CPU the rest of the machine took while we measured: the
    machine's busy time less that of this script, its reaped children
    (the load tool) and the servers' sessions, in % of one CPU."""

    def __init__(self, sids):
        self.sids = sids
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0 = time.monotonic()
        self.busy0 = cpu_busy()
        self.ours0 = self.ours()

    def ours(self):
        t = os.times()
        n = (t.user + t.system + t.children_user +
             t.children_system) * self.hz
        for sid in self.sids:
            for pid in session_pids(sid):
                try:
                    n += ticks(pid)
                except (OSError, IndexError):
                    pass
        return n

    def end(self):
        ours = self.ours() - self.ours0
        busy = cpu_busy() - self.busy0
        dt = time.monotonic() - self.t0
        return max(0.0, 100.0 * (busy - ours) / self.hz / dt)


def children(pid):
    """The pids of the children of `pid` (all of its threads' children)."""
    out = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def memory(pid):
    """RSS and USS (Private_Clean + Private_Dirty) and PSS of pid, in kB."""
    m = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":"):
                    m[parts[0][:-1]] = int(parts[1])
    except OSError:
        return None
    return {"rss": m.get("Rss", 0), "pss": m.get("Pss", 0),
            "uss": m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)}


def rss_kb(pid):
    """VmRSS of pid in kB (cheaper than smaps_rollup, for sampling)."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


# ---- HTTP probes ------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, timeout=3.0):
    """GET / on a new connection: (status, X-Pid) or None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Connection: close\r\n\r\n")
        return read_response(s)
    except OSError:
        return None
    finally:
        s.close()


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(None, 2)[1])
    pid = re.search(r"(?im)^x-pid:\s*(\d+)", head)
    return status, int(pid.group(1)) if pid else None


def probe_burst(port, n, timeout=3.0):
    """n GET / at once, each on a new connection; the X-Pids answering.
    Several at once, so that a worker other than the one the kernel wakes
    first when all are idle gets some (nginx's accept is exclusive)."""
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port),
                                         timeout=timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            socks.append(s)
        except OSError:
            pass
    pids = set()
    for s in socks:
        try:
            r = read_response(s)
            if r and r[0] == 200 and r[1]:
                pids.add(r[1])
        except OSError:
            pass
        finally:
            s.close()
    return pids
