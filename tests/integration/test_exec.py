"""-k exec: any program as a worker, handed its listeners and told where to
notify as systemd does (issue 14).

The programs are real interpreters' (python3 as this test runs, node, sh,
/bin/sleep): a Python HTTP server taking its socket from fd 3, a Node one
with listen({fd: 3}), a shell script made ready by systemd-notify.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from fp.base import REPO, TIMEOUT, wait_for
from fp.control import call, control_status
from fp.http import HttpLoad
from fp.proc import proc_status

# The HTTP server the Python tests exec.  It answers one request per
# connection (Connection: close), with X-Pid and X-Worker, and stops
# gracefully on SIGTERM: the handler only sets a flag, and the loop waits
# for connections with select() on a listener it made non-blocking itself
# (every worker of the pool runs this same program, so all agree).
APP = r'''
import os, select, signal, socket, sys, time

args = sys.argv[1:]
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default

stopping = False
def on_term(signo, frame):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term)

print("env LISTEN_FDS=%s LISTEN_PID=%s pid=%d FORKPOOL_WORKER_ID=%s "
      "LISTEN_FDNAMES=%s NOTIFY_SOCKET=%s WATCHDOG_USEC=%s WATCHDOG_PID=%s "
      "blocking=%s" % (
          os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID"),
          os.getpid(), os.environ.get("FORKPOOL_WORKER_ID"),
          os.environ.get("LISTEN_FDNAMES"), os.environ.get("NOTIFY_SOCKET"),
          os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID"),
          os.get_blocking(3)), flush=True)

notify = None
if os.environ.get("NOTIFY_SOCKET"):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.connect(addr)

def tell(msg):
    if notify is not None:
        notify.send(msg.encode())

time.sleep(float(opt("--ready-delay", "0")))
tell("READY=1\nSTATUS=" + opt("--status", "serving"))
started = time.monotonic()
quiet_after = float(opt("--watchdog-for", "1e9"))
last_ping = 0.0

lst = socket.socket(fileno=3)
lst.setblocking(False)
me = os.environ.get("FORKPOOL_WORKER_ID", "?")
while not stopping:
    now = time.monotonic()
    if now - last_ping > 0.2 and now - started < quiet_after:
        tell("WATCHDOG=1")
        last_ping = now
    try:
        r, _, _ = select.select([lst], [], [], 0.1)
    except InterruptedError:
        continue
    if not r:
        continue
    try:
        c, _ = lst.accept()
    except BlockingIOError:
        continue
    c.setblocking(True)
    c.settimeout(5)
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            more = c.recv(4096)
            if not more:
                break
            data += more
        body = b"hello from %d\n" % os.getpid()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Pid: %d\r\n"
                  b"X-Worker: %s\r\nConnection: close\r\n\r\n%s"
                  % (len(body), os.getpid(), me.encode(), body))
    except OSError:
        pass
    c.close()
tell("STOPPING=1")
print("worker %s pid %d got SIGTERM, bye" % (me, os.getpid()), flush=True)
'''

NODE_APP = r'''
const http = require("http");
const server = http.createServer((req, res) => {
  res.setHeader("X-Pid", String(process.pid));
  res.setHeader("X-Worker", process.env.FORKPOOL_WORKER_ID);
  res.setHeader("Connection", "close");
  res.end("hello from node " + process.pid + "\n");
});
server.listen({ fd: 3 }, () => console.log("node " + process.pid + " listening"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
'''


def http_get(port, timeout=TIMEOUT):
    """One GET / on a fresh connection: (status, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            more = c.recv(65536)
            if not more:
                break
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "app.py"
    path.write_text(APP)
    return str(path)


def exec_pool(forkpool, n, *args, program=()):
    return forkpool("-w", n, *args, "-k", "exec", "--", *program)


def pids_answering(port, want, timeout=TIMEOUT):
    """Send requests on fresh connections until `want` distinct X-Pids
    answered; return them."""
    seen = set()

    def enough():
        status, h, body = http_get(port)
        assert status == 200, (status, h, body)
        seen.add(int(h["x-pid"]))
        return seen if len(seen) >= want else None
    return wait_for(enough, timeout, what=f"{want} distinct workers answering (saw {seen})")


def test_python_http_from_fd3(forkpool, app):
    m = exec_pool(forkpool, 3, program=(sys.executable, app))
    pool = m.wait_pool(3)
    assert pids_answering(m.port, 3) == set(pool.values())
    for slot, pid in pool.items():
        line = m.wait_out(rf"^\[worker {slot} pid {pid}\] env ").string
        assert f"LISTEN_FDS=1 LISTEN_PID={pid} pid={pid} FORKPOOL_WORKER_ID={slot} " in line, line
        assert f"LISTEN_FDNAMES=127.0.0.1_{m.port} " in line, line
        # --exec-type exec: no notify socket, no watchdog.
        assert "NOTIFY_SOCKET=None WATCHDOG_USEC=None" in line, line
    # A graceful stop: every program got SIGTERM and said so.
    assert m.stop() == 0
    for slot, pid in pool.items():
        assert m.find(rf"^\[worker {slot} pid {pid}\] worker {slot} pid {pid} got SIGTERM",
                      stream="out"), m.describe()
    m.assert_tree_gone()


def test_sleep_holds_only_stdio_and_listeners(forkpool, monkeypatch, tmp_path):
    # What the master inherited of systemd's contract must not leak.
    monkeypatch.setenv("LISTEN_FDS", "7")
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "bogus")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "5")
    unix = tmp_path / "s.sock"
    m = exec_pool(forkpool, 1, "-b", f"unix:{unix}", program=("/bin/sleep", "1000"))
    (pid,) = m.wait_pool(1).values()
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2, 3, 4]
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    for fd in (3, 4):
        assert os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        flags = int(re.search(r"flags:\s+(\d+)", open(f"/proc/{pid}/fdinfo/{fd}").read())[1], 8)
        assert flags & os.O_NONBLOCK == 0, "listeners are handed over blocking"
    st = proc_status(pid)
    assert int(st["SigBlk"], 16) == 0 and int(st["SigIgn"], 16) == 0, st
    env = dict(e.split("=", 1) for e in
               open(f"/proc/{pid}/environ", "rb").read().decode().split("\0") if "=" in e)
    assert env["LISTEN_PID"] == str(pid)
    assert env["LISTEN_FDS"] == "2"
    assert env["LISTEN_FDNAMES"] == f"127.0.0.1_{m.port}:unix_{unix}"
    assert env["FORKPOOL_WORKER_ID"] == "0"
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    # It dies with the master (PR_SET_PDEATHSIG survived the exec).
    assert int(open(f"/proc/{pid}/status").read().split("PPid:")[1].split()[0]) == m.pid


def test_sigkill_replaced(forkpool, app):
    m = exec_pool(forkpool, 2, "--min-uptime", "0.1", program=(sys.executable, app))
    pool = m.wait_pool(2)
    m.wait_uptime(pool[0], 0.2)
    os.kill(pool[0], signal.SIGKILL)
    new = m.wait_respawn(0, pool[0])
    assert pids_answering(m.port, 2) == {new, pool[1]}
    assert m.stop() == 0


def test_missing_program_exit_2(run_cli):
    res = run_cli("-k", "exec", "--", "/no/such/program")
    assert res.returncode == 2
    assert "/no/such/program" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = run_cli("-k", "exec", "--", "no-such-program-fp14")
    assert res.returncode == 2
    assert "no-such-program-fp14" in res.stderr and "PATH" in res.stderr, res.stderr
    res = run_cli("-k", "exec")
    assert res.returncode == 2 and "after --" in res.stderr, res.stderr


def test_exec_failure_and_crash_loop_back_off(forkpool, tmp_path):
    # Executable, so the start-up check passes, but its interpreter is
    # missing: execve() fails in the child, reported through the pipe.
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/no/such/interpreter\n")
    bad.chmod(0o755)
    m = exec_pool(forkpool, 1, program=(str(bad),))
    line = m.wait_log(r"worker 0 pid \d+ failed to start: cannot exec .*bad\.sh: "
                      r"No such file or directory").string
    assert line
    m.wait_log(r"worker 0: .*; next start in", count=1)
    # A program that exits at once backs off like any crash loop.
    m2 = exec_pool(forkpool, 1, program=("/bin/false",))
    m2.wait_log(r"worker 0 pid \d+ exited with status 1", count=3)
    m2.wait_log(r"worker 0: .*; next start in")


def test_notify_status_watchdog_and_ready(forkpool, app, sock_path):
    m = exec_pool(forkpool, 2, "--exec-type", "notify", "--worker-timeout", "2",
                  "--min-uptime", "0.1", "--control", sock_path,
                  program=(sys.executable, app, "--status", "idle and well",
                           "--watchdog-for", "1e9"))
    pool = m.wait_pool(2)
    line = m.wait_out(rf"^\[worker 0 pid {pool[0]}\] env ").string
    assert re.search(r"NOTIFY_SOCKET=@forkpool/\d+/notify/0/\d+ WATCHDOG_USEC=2000000 "
                     rf"WATCHDOG_PID={pool[0]} ", line), line
    st = control_status(sock_path)
    doing = {w["pid"]: w.get("activity") for w in st["workers"]}
    assert doing == {pool[0]: "idle and well", pool[1]: "idle and well"}, st
    # Pings keep them alive past --worker-timeout.
    time.sleep(2.5)
    assert m.pool_state(2) == pool
    assert not m.find(r"hung")


def test_watchdog_silence_kills(forkpool, app):
    m = exec_pool(forkpool, 1, "--exec-type", "notify", "--worker-timeout", "1",
                  "--min-uptime", "0.1",
                  program=(sys.executable, app, "--watchdog-for", "0.5",
                           "--status", "stuck in a loop"))
    (pid,) = m.wait_pool(1).values()
    line = m.wait_log(rf"worker 0 pid {pid} hung: no heartbeat").string
    assert "stuck in a loop" in line, line
    m.wait_respawn(0, pid)


def test_never_ready_is_a_failed_start(forkpool, tmp_path):
    prog = tmp_path / "mute.sh"
    prog.write_text("#!/bin/sh\nexec sleep 1000\n")
    prog.chmod(0o755)
    m = exec_pool(forkpool, 1, "--exec-type", "notify", "--worker-timeout", "1",
                  program=(str(prog),))
    m.wait_log(r"worker 0 pid \d+ did not send READY=1 within --worker-timeout")
    m.wait_log(r"worker 0: .*; next start in")
    assert not m.ready_workers()


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify")
def test_shell_script_ready_by_systemd_notify(forkpool, tmp_path):
    prog = tmp_path / "ready.sh"
    prog.write_text("#!/bin/sh\nsystemd-notify --ready --status='from a script'\n"
                    "exec sleep 1000\n")
    prog.chmod(0o755)
    m = exec_pool(forkpool, 2, "--exec-type", "notify", "--worker-timeout", "30",
                  program=(str(prog),))
    m.wait_pool(2)


@pytest.mark.skipif(shutil.which("node") is None, reason="no node")
def test_node_listen_fd3(forkpool, tmp_path):
    js = tmp_path / "app.js"
    js.write_text(NODE_APP)
    m = exec_pool(forkpool, 2, program=(shutil.which("node"), str(js)))
    pool = m.wait_pool(2)
    assert pids_answering(m.port, 2) == set(pool.values())
    assert m.stop() == 0


def test_rolling_reload_gated_on_ready(forkpool, app):
    m = exec_pool(forkpool, 2, "--exec-type", "notify", "--min-uptime", "0.1",
                  program=(sys.executable, app, "--ready-delay", "1.5"))
    old = m.wait_pool(2)
    load = HttpLoad(m.port, keepalive=0, fresh=6)
    load.start()
    try:
        wait_for(lambda: load.total() > 20, what="load running")
        m.signal(signal.SIGHUP)
        for slot, pid in old.items():
            m.wait_log(rf"worker {slot} pid {pid} exited", timeout=TIMEOUT * 2)
        time.sleep(0.3)
    finally:
        load.stop()
        load.join()
    assert not load.failures, load.failures[:5]
    new = m.wait_pool(2)
    assert set(new.values()).isdisjoint(old.values())
    # No old worker was told to stop before its replacement said READY=1.
    for slot, pid in old.items():
        ready = m.find(rf"worker {slot} pid {new[slot]} ready")[0].string
        stop = [x.string for x in m.find(rf"worker {slot} pid {pid} ")
                if "exited" in x.string][0]
        assert ready < stop, (ready, stop)
    assert set(load.served_by) >= set(new.values())


@pytest.mark.parametrize("name,notify", [("hello.py", True), ("hello.js", False)])
def test_examples_serve(forkpool, name, notify):
    """examples/exec/: the README's programs, run as they say."""
    interp = sys.executable if name.endswith(".py") else shutil.which("node")
    if interp is None:
        pytest.skip("no node")
    args = ("--exec-type", "notify") if notify else ()
    m = exec_pool(forkpool, 2, *args, program=(interp, str(REPO / "examples" / "exec" / name)))
    pool = m.wait_pool(2)
    seen = set()

    def both():
        status, _, body = http_get(m.port)
        assert status == 200
        found = re.match(rb"hello from worker (\d) pid (\d+)\n", body)
        assert found, body
        seen.add((int(found[1]), int(found[2])))
        return seen == set(pool.items())
    wait_for(both, what=f"both workers of {pool} answering (saw {seen})")
    assert m.stop() == 0
    m.assert_tree_gone()


def test_exec_stop_signal(forkpool, tmp_path):
    # A server that stops gracefully on SIGQUIT, and dies on SIGTERM.
    prog = tmp_path / "quit.py"
    prog.write_text(
        "import signal, sys, time\n"
        "def bye(*a):\n"
        "    print('graceful on', signal.Signals(a[0]).name, flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGQUIT, bye)\n"
        "print('up', flush=True)\n"
        "while True:\n"
        "    time.sleep(1)\n")
    m = exec_pool(forkpool, 1, "--exec-stop-signal", "QUIT", program=(sys.executable, str(prog)))
    (pid,) = m.wait_pool(1).values()
    m.wait_out(rf"\[worker 0 pid {pid}\] up")
    assert m.stop() == 0
    assert m.find(rf"\[worker 0 pid {pid}\] graceful on SIGQUIT", stream="out"), m.describe()
    assert m.find(rf"worker 0 pid {pid} exited with status 0"), m.describe()


def test_config_file_worker_exec(forkpool, app, tmp_path):
    conf = tmp_path / "pool.json"
    conf.write_text(json.dumps({"workers": 2, "worker": "exec", "exec-type": "notify",
                                "worker-args": [sys.executable, app]}))
    m = forkpool("--config", conf, worker=None)
    pool = m.wait_pool(2)
    assert pids_answering(m.port, 2) == set(pool.values())
    # A reload re-reads the file: the program is looked up again.
    m.signal(signal.SIGHUP)
    for slot, pid in pool.items():
        m.wait_respawn(slot, pid)
    assert m.stop() == 0


def test_reload_cannot_switch_to_or_from_exec(forkpool, app, tmp_path):
    # O_NONBLOCK is the shared listener's: blocking for programs,
    # non-blocking for C workers, so they cannot serve side by side.
    conf = tmp_path / "pool.json"
    conf.write_text(json.dumps({"workers": 1, "worker": "http"}))
    m = forkpool("--config", conf, worker=None)
    (pid,) = m.wait_pool(1).values()
    conf.write_text(json.dumps({"workers": 1, "worker": "exec",
                                "worker-args": [sys.executable, app]}))
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload refused: .*switching between -k exec and another worker needs a restart")
    assert m.pool_state(1) == {0: pid}
    assert m.stop() == 0


def notify_addr_of(pid):
    env = dict(e.split("=", 1) for e in
               open(f"/proc/{pid}/environ", "rb").read().decode().split("\0") if "=" in e)
    return env["NOTIFY_SOCKET"].replace("@", "\0", 1)


def test_notify_fds_closed_and_strangers_dropped(forkpool, tmp_path):
    prog = tmp_path / "ready.sh"
    prog.write_text("#!/bin/sh\nsystemd-notify --ready\nexec sleep 1000\n")
    prog.chmod(0o755)
    if shutil.which("systemd-notify") is None:
        pytest.skip("no systemd-notify")
    m = exec_pool(forkpool, 1, "--exec-type", "notify", "--worker-timeout", "30",
                  program=(str(prog),))
    (pid,) = m.wait_pool(1).values()
    addr = notify_addr_of(pid)
    before = len(os.listdir(f"/proc/{m.pid}/fd"))
    # fds sent along with a message are closed, whatever else it says.
    r, w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        for _ in range(20):
            socket.send_fds(s, [b"RELOADING=1\nMAINPID=1\nFDSTORE=1"], [r, w])
    os.close(r)
    os.close(w)
    time.sleep(0.3)
    assert len(os.listdir(f"/proc/{m.pid}/fd")) == before
    assert m.pool_state(1) == {0: pid}
    # A process of another user is no worker's: dropped and counted.
    if os.geteuid() != 0:
        return
    code = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
            f"s.sendto(b'STATUS=forged', {addr!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT,
                   preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    m.wait_log(rf"worker 0 pid {pid}: a notify message from pid \d+ uid 65534 dropped "
               r"\(1 so far\)")


def test_ctl_scale_kill_output(forkpool, app, sock_path):
    m = exec_pool(forkpool, 1, "--control", sock_path, "--min-uptime", "0.1",
                  program=(sys.executable, app))
    (pid,) = m.wait_pool(1).values()
    call(sock_path, "scale", workers=3)
    pool = m.wait_pool(3)
    assert pids_answering(m.port, 3) == set(pool.values())
    wait_for(lambda: any(l.startswith("env LISTEN_FDS=1 ")
                         for l in call(sock_path, "output", worker=2)["lines"]),
             what="slot 2's env line in `ctl output`")
    m.wait_uptime(pool[1], 0.2)
    # A graceful kill: SIGTERM, the program says goodbye, it is replaced.
    assert call(sock_path, "kill", worker=1, signal="TERM") is True
    m.wait_respawn(1, pool[1])
    m.wait_out(rf"\[worker 1 pid {pool[1]}\] worker 1 pid {pool[1]} got SIGTERM")
    call(sock_path, "scale", workers=1)
    m.wait_pool(1)
    assert m.stop() == 0


def test_exec_type_exec_liveness_is_existence(forkpool):
    # No heartbeat from a plain program is no hang: it lives on past
    # --worker-timeout; exiting is what ends it.
    m = exec_pool(forkpool, 1, "--worker-timeout", "0.5", "--check-interval", "0.1",
                  program=("/bin/sleep", "1000"))
    (pid,) = m.wait_pool(1).values()
    time.sleep(1.5)
    assert m.pool_state(1) == {0: pid}
    assert not m.find(r"hung|SIGKILL")
    assert m.stop() == 0
