"""Binary upgrade in place: a new copy of the forkpool binary renamed over
the one the master runs, then SIGUSR2, under keep-alive load (what is
dropped, how long until the last old worker is gone); then upgrades in a
row, and the master's open fds and RSS after them."""
import json
import os
import shutil
import signal
import subprocess
import time

from common import (BIN, alive, children, free_port, http_get, log_time, say,
                    spawn, summary, tmpdir, wait_for)
from loadgen import ka_cmd
from sc_lifecycle import dip
from servers import Forkpool, Nginx, available


class ForkpoolCopy(Forkpool):
    """forkpool http run from a copy of the binary, which a round replaces
    by rename."""
    name, label = "forkpool-upgrade", "forkpool (upgrade)"

    def __init__(self, path, workers=8):
        super().__init__(workers, "http")
        self.path = path

    def command(self):
        return [self.path] + super().command()[1:]


def _install(src, dest):
    shutil.copy2(src, dest + ".new")
    os.rename(dest + ".new", dest)


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _upgrade(s, count):
    """SIGUSR2, then wait for the count-th "upgrade complete" and for no
    worker of before to be left; ms from the signal to that."""
    old = s.worker_pids()
    t0 = time.monotonic()
    s.signal(signal.SIGUSR2)
    wait_for(lambda: len(s.log_times("upgrade complete")) >= count,
             what="upgrade %d to complete" % count)
    wait_for(lambda: not (old & s.worker_pids()), what="the old workers to go")
    return (time.monotonic() - t0) * 1e3


def _load_row(r, t_sig, gone_ms):
    """What a keep-alive client saw around an upgrade signalled at t_sig
    (Unix time), the old workers gone gone_ms later."""
    before, low = dip(r, t_sig, (gone_ms + 200) / 1e3)
    return {"dropped": r["dropped"] - r["dropped_first"],
            "reset_new": r["dropped_first"], "refused": r["refused"],
            "errors": r["errors"] + r["timeouts"], "ok": r["ok"],
            "old_gone_ms": round(gone_ms, 1),
            "before_rps": before, "lowest_rps": low,
            "lowest_pct": round(100.0 * low / before, 1)
            if before and low is not None else None}


def _read_pid(path):
    try:
        return int(open(path).read())
    except (OSError, ValueError):
        return None


def _nginx_round(cfg):
    """nginx's own binary upgrade under the same load: USR2 (a new master
    with new workers), then QUIT to the old master once they are up, as
    its documentation says.  nginx ignores USR2 while its parent is the
    one that started it, so it runs as a daemon here (its own session:
    stopped by pid at the end)."""
    n = Nginx(workers=8)
    n.port = free_port()
    cmd = n.command()
    conf = cmd[cmd.index("-c") + 1]
    with open(conf) as f:
        text = f.read().replace("daemon off;", "daemon on;")
    with open(conf, "w") as f:
        f.write(text)
    pidfile = os.path.join(n.dir, "nginx.pid")
    masters = []
    try:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, cwd=n.dir, check=True,
                       timeout=30)

        def up(exclude):
            pid = _read_pid(pidfile)
            if pid is None or pid in exclude or len(children(pid)) < 8:
                return None
            return pid
        old_master = wait_for(lambda: up(()) and http_get(n.port) and
                              up(()), what="nginx (daemon) up")
        masters.append(old_master)
        old = children(old_master)
        client = spawn(ka_cmd(n.port, cfg.ka_conns, cfg.reload_s),
                       stdout=subprocess.PIPE, text=True)
        time.sleep(cfg.reload_s / 3)  # pacing within the load window
        t_sig, t0 = time.time(), time.monotonic()
        os.kill(old_master, signal.SIGUSR2)
        masters.append(wait_for(lambda: up((old_master,)),
                                what="nginx's new master and workers"))
        os.kill(old_master, signal.SIGQUIT)
        wait_for(lambda: not any(alive(p) for p in old),
                 what="nginx's old workers to go")
        gone_ms = (time.monotonic() - t0) * 1e3
        r = json.loads(client.communicate(timeout=cfg.reload_s + 30)[0])
    finally:
        for pid in masters:
            procs = [pid] + sorted(children(pid))
            if alive(pid):
                os.kill(pid, signal.SIGQUIT)
            try:
                wait_for(lambda: not any(alive(p) for p in procs),
                         timeout=15, what="nginx to stop")
            except RuntimeError:
                for p in procs:
                    if alive(p):
                        os.kill(p, signal.SIGKILL)
    return _load_row(r, t_sig, gone_ms)


def sc_upgrade(cfg, res):
    """-w 8 http, K keep-alive connections: SIGUSR2 a third into the run;
    then N upgrades in a row without load."""
    d = tmpdir()
    path = os.path.join(d, "forkpool")
    shutil.copy2(BIN, path)
    rounds = 1 if cfg.quick else 3
    in_a_row = 5 if cfg.quick else 20
    out = res["upgrade"] = {"workers": 8, "conns": cfg.ka_conns, "rounds": []}
    s = ForkpoolCopy(path).start()
    try:
        count = 0
        for _ in range(rounds):
            _install(BIN, path)
            client = spawn(ka_cmd(s.port, cfg.ka_conns, cfg.reload_s),
                           stdout=subprocess.PIPE, text=True)
            time.sleep(cfg.reload_s / 3)  # pacing within the load window
            count += 1
            t_sig = time.time()
            gone_ms = _upgrade(s, count)
            r = json.loads(client.communicate(timeout=cfg.reload_s + 30)[0])
            sig = s.log_times("got SIGUSR2")[count - 1]
            done = s.log_times("upgrade complete")[count - 1]
            row = _load_row(r, t_sig, gone_ms)
            row["complete_ms"] = round((done - sig) * 1e3, 1)
            out["rounds"].append(row)
        pid = s.proc.pid
        fds0, rss0 = _fds(pid), _rss_kib(pid)
        times = []
        for _ in range(in_a_row):
            _install(BIN, path)
            count += 1
            times.append(_upgrade(s, count))
        out["in_a_row"] = {
            "n": in_a_row, "old_gone_ms": summary(times),
            "fds_before": fds0, "fds_after": _fds(pid),
            "rss_kib_before": rss0, "rss_kib_after": _rss_kib(pid),
            "same_pid": s.proc.poll() is None and
            os.readlink("/proc/%d/exe" % pid) == path}
    finally:
        s.stop()
    if available(Nginx):
        out["nginx"] = [_nginx_round(cfg) for _ in range(rounds)]
    for who, rows in (("forkpool", out["rounds"]),
                      ("nginx", out.get("nginx", []))):
        for i, r in enumerate(rows):
            say("  upgrade round %d %-8s -w 8, %d keep-alive connections: "
                "dropped %d, reset %d, refused %d, errors %d (%d ok); "
                "lowest 50 ms %s%% of before; SIGUSR2 → last old worker "
                "gone %.0f ms" % (
                    i + 1, who, cfg.ka_conns, r["dropped"], r["reset_new"],
                    r["refused"], r["errors"], r["ok"],
                    "?" if r["lowest_pct"] is None else
                    "%.0f" % r["lowest_pct"], r["old_gone_ms"]))
    a = out["in_a_row"]
    say("  upgrade %d in a row: old workers gone p50 %.1f ms; master fds %d → "
        "%d, RSS %s → %s KiB, same pid: %s" % (
            a["n"], a["old_gone_ms"]["median"], a["fds_before"],
            a["fds_after"], a["rss_kib_before"], a["rss_kib_after"],
            a["same_pid"]))
