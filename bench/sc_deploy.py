"""Deploying new code: a new worker module renamed over the path, then
SIGHUP; the time until every worker runs the new version (each worker
loads the module itself, after fork)."""
import os
import signal
import subprocess
import time

from common import BIN, log_time, say, spawn, summary, tmpdir, wait_for

# A module that logs its version in on_start, so the log says when each
# worker runs which file.
MODULE = r"""
#include <forkpool.h>
static int v_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	fpool_log(FPOOL_LOG_INFO, "module version %d", VERSION);
	return 0;
}
static int v_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w);
}
static const struct fpool_worker_def v = {
	.name = "version", .on_start = v_start, .main = v_main };
FPOOL_WORKER_MODULE(v);
"""

WORKERS = 8


def _build(d, version):
    src = os.path.join(d, "v.c")
    with open(src, "w") as f:
        f.write(MODULE)
    out = os.path.join(d, "v%d.so" % version)
    inc = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "include")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-I" + inc,
                    "-DVERSION=%d" % version, "-o", out, src], check=True)
    return out


def _deploy(src, dest):
    with open(src, "rb") as f, open(dest + ".new", "wb") as g:
        g.write(f.read())
    os.rename(dest + ".new", dest)


def _lines(path, needle):
    try:
        with open(path, errors="replace") as f:
            return [l for l in f if needle in l]
    except FileNotFoundError:
        return []


def sc_deploy(cfg, res):
    """`-w 8`: rename version N+1 over the module, SIGHUP, and time (from
    the master's log) from "got SIGHUP" to the last "module version N+1"."""
    d = tmpdir()
    rounds = 1 if cfg.quick else 5
    mods = [_build(d, v) for v in range(1, rounds + 2)]
    app, log = os.path.join(d, "app.so"), os.path.join(d, "master.log")
    _deploy(mods[0], app)
    p = spawn([BIN, "-w", str(WORKERS), "-b", "127.0.0.1:0", "-k", app,
               "--log-file", log])
    out = res["deploy"] = {"workers": WORKERS, "rounds": []}
    try:
        wait_for(lambda: len(_lines(log, "module version 1")) == WORKERS,
                 what="%d workers on version 1" % WORKERS)
        for r in range(rounds):
            version = r + 2
            _deploy(mods[r + 1], app)
            hups = len(_lines(log, "got SIGHUP"))
            p.send_signal(signal.SIGHUP)
            want = "module version %d" % version
            wait_for(lambda: len(_lines(log, want)) == WORKERS and
                     _lines(log, "reload complete")[r:],
                     what="%d workers on version %d" % (WORKERS, version))
            t0 = log_time(_lines(log, "got SIGHUP")[hups].split()[0])
            t1 = max(log_time(l.split()[0]) for l in _lines(log, want))
            out["rounds"].append(round((t1 - t0) * 1e3, 2))
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    out["ms"] = summary(out["rounds"])
    say("  deploy: -w %d, SIGHUP → every worker on the new module: %s ms "
        "(median of %d)" % (WORKERS, out["ms"]["median"], rounds))
