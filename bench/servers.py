"""The servers under test: forkpool (and variants of it), bare http and
bare evhttp,
nginx, gunicorn and node.  Each runs on a free port of 127.0.0.1 in a
session of its own, which is emptied when it stops and at exit."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import time

from common import (BIN, PEERS, PY, READY, TOOL, WORKERS, alive, children,
                    free_port, have, http_get, kill_session, log_time,
                    memory, spawn, tmpdir)


class Server:
    """A server under test, started with `workers` workers on a free port
    of 127.0.0.1, in a session of its own."""
    name = label = ""
    kind = "http"
    reload_sig = signal.SIGHUP
    stop_sig = signal.SIGTERM
    can_reload = True
    env = None

    def __init__(self, workers=WORKERS):
        self.workers = workers
        self.proc = None
        self.dir = tmpdir()
        self.logpath = os.path.join(self.dir, "server.log")

    def command(self):
        raise NotImplementedError

    def start(self, timeout=30.0):
        self.port = free_port()
        cmd = self.command()
        self.logf = open(self.logpath, "a")
        self.t_start = time.time()
        self.proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=self.logf,
                          stderr=self.logf, cwd=self.dir, env=self.env)
        self.wait_up(timeout)
        return self

    def log_text(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def fail(self, what):
        raise RuntimeError("%s: %s\n%s" % (self.label, what,
                                           self.log_text()[-2000:]))

    def worker_pids(self):
        return {p for p in children(self.proc.pid) if alive(p)}

    def up(self):
        if len(self.worker_pids()) < self.workers:
            return False
        r = http_get(self.port, timeout=1.0)
        return r is not None and r[0] == 200

    def wait_up(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail("exited with %d" % self.proc.returncode)
            if self.up():
                return
            time.sleep(0.01)
        self.fail("not up within %.0f s" % timeout)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, sig=None, timeout=15.0):
        """Stop gracefully (then by force); the time the master took to
        exit, in ms."""
        if self.proc is None:
            return None
        took = None
        if self.proc.poll() is None:
            t0 = time.monotonic()
            try:
                os.kill(self.proc.pid, sig or self.stop_sig)
                self.proc.wait(timeout)
                took = (time.monotonic() - t0) * 1e3
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.proc.pid)
        self.proc.wait()
        self.logf.close()
        return took

    def memory(self):
        """Memory of the master and the workers at idle, kB."""
        master = memory(self.proc.pid)
        workers = [m for m in (memory(p) for p in self.worker_pids()) if m]
        return {
            "master_rss": master["rss"], "master_uss": master["uss"],
            "worker_rss": statistics.median(w["rss"] for w in workers),
            "worker_uss": statistics.median(w["uss"] for w in workers),
            "total_pss": master["pss"] + sum(w["pss"] for w in workers),
        }


class Forkpool(Server):
    name, label = "forkpool", "forkpool"

    def __init__(self, workers=WORKERS, worker="http", args=()):
        super().__init__(workers)
        self.kind = ("http" if worker == "http" else
                     worker if worker in ("echo", "jsonrpc") else "other")
        self.worker = worker
        self.args = list(args)
        self.pos = 0
        self.ready = {}  # pid -> Unix time of its "ready"
        self.after_fork = {}  # pid -> ms from fork to "ready"
        self.log_lines = []
        self.control = os.path.join(self.dir, "control.sock")

    def command(self):
        return [BIN, "-b", "127.0.0.1:%d" % self.port, "-w",
                str(self.workers), "-k", self.worker, "--control",
                self.control] + self.args

    def poll_log(self):
        with open(self.logpath, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].decode(errors="replace").splitlines():
            self.log_lines.append(line)
            m = READY.match(line)
            if m:
                self.ready[int(m.group(3))] = log_time(m.group(1))
                if m.group(4):
                    self.after_fork[int(m.group(3))] = float(m.group(4))

    def log_times(self, text):
        """The Unix times of the master's log lines containing `text`."""
        self.poll_log()
        return [log_time(line.split(None, 1)[0]) for line in self.log_lines
                if text in line]

    def up(self):
        # The log first: with 1024 workers, reading /proc for each of
        # them every 10 ms would take CPU from the start being measured.
        self.poll_log()
        if len(self.ready) < self.workers:
            return False
        pids = self.worker_pids()
        if len(pids) < self.workers or not pids <= set(self.ready):
            return False
        if self.kind != "http":
            return True
        r = http_get(self.port, timeout=1.0)
        return r is not None and r[0] == 200

    def status(self):
        out = subprocess.run([BIN, "ctl", "--control", self.control,
                              "--json", "status"], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)


class ForkpoolChangelist(Forkpool):
    """forkpool http with libevent's epoll changelist (an experiment: the
    environment variable is read by event_base_new() in the workers)."""
    name, label = "forkpool-changelist", "forkpool, epoll changelist"

    def __init__(self, workers=WORKERS, args=()):
        super().__init__(workers, "http", args)
        self.env = dict(os.environ, EVENT_EPOLL_USE_CHANGELIST="1")


class ForkpoolReuse(Forkpool):
    name, label = "forkpool-reuseport", "forkpool --reuse-port"

    def __init__(self, workers=WORKERS, args=()):
        super().__init__(workers, "http", ["--reuse-port"] + list(args))


class Forkpool8(Forkpool):
    """8 http workers: a rolling reload takes 4 times as many steps (the
    reload row the older `scripts/bench reload` measured)."""
    name, label = "forkpool-w8", "forkpool -w 8"

    def __init__(self, workers=8, args=()):
        super().__init__(workers, "http", args)


class ForkpoolEcho(Forkpool):
    name, label = "forkpool-echo", "forkpool echo"

    def __init__(self, workers=WORKERS, args=()):
        super().__init__(workers, "echo", args)


class ForkpoolExec(Forkpool):
    """forkpool -k exec --exec-type notify running a Python program:
    gunicorn's own WSGI app (peers/exec_app.py), served by the standard
    library from fd 3."""
    name, label = "forkpool-exec", "forkpool exec py"

    def __init__(self, workers=WORKERS, args=()):
        super().__init__(workers, "exec", args)
        self.kind = "http"

    def command(self):
        return [BIN, "-b", "127.0.0.1:%d" % self.port, "-w",
                str(self.workers), "--exec-type", "notify", "--control",
                self.control] + self.args + [
                    "-k", "exec", "--", PY, os.path.join(PEERS,
                                                         "exec_app.py")]


class Bare(Server):
    """bench/bare-evhttp.c: GET / as the http worker answered it on evhttp,
    before it had a path of its own."""
    name, label = "bare-evhttp", "bare evhttp"
    can_reload = False

    def command(self):
        return [TOOL[self.name], "-w", str(self.workers), "-b",
                "127.0.0.1:%d" % self.port]


class BareHttp(Bare):
    """bench/bare-http.c: the http worker's own code, without forkpool."""
    name, label = "bare-http", "bare http"


class Nginx(Server):
    name, label = "nginx", "nginx"
    stop_sig = signal.SIGQUIT  # graceful shutdown

    def command(self):
        conf = open(os.path.join(PEERS, "nginx.conf.in")).read()
        conf = (conf.replace("@DIR@", self.dir)
                .replace("@PORT@", str(self.port))
                .replace("@WORKERS@", str(self.workers)))
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", self.dir, "-c", path, "-e",
                os.path.join(self.dir, "error.log")]


class Gunicorn(Server):
    name, label = "gunicorn", "gunicorn sync"

    def __init__(self, workers=WORKERS):
        super().__init__(workers)
        # no __pycache__ left in bench/peers
        self.env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

    def command(self):
        return [PY, "-m", "gunicorn", "-w", str(self.workers), "-k", "sync",
                "-b", "127.0.0.1:%d" % self.port, "--chdir", PEERS,
                "--log-level", "warning", "gunicorn_app:app"]


class Node(Server):
    name, label = "node", "node cluster"

    def command(self):
        return ["node", os.path.join(PEERS, "node-cluster.js"),
                str(self.port), str(self.workers)]


HTTP_SERVERS = [Forkpool, BareHttp, Bare, Nginx, Node, Gunicorn]
# Also measured, in the detail tables only.
EXTRA_THROUGHPUT = [ForkpoolChangelist, ForkpoolReuse]
EXTRA_LIFECYCLE = [ForkpoolReuse]
EXTRA_RELOAD = [Forkpool8]
NEEDS = {"nginx": "nginx", "gunicorn": "gunicorn", "node": "node"}


def available(cls):
    need = NEEDS.get(cls.name)
    return need is None or have(need)
