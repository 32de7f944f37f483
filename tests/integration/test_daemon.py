"""Daemon mode (-D) and the pidfile (--pidfile).

`forkpool -D` returns once the pool started (exit 0) or failed (exit 1);
the daemon master is detached (re-parented, a session of its own, no
terminal, cwd /, stdio on /dev/null), its pid is in the pidfile, held with
a lock: a second master with the same pidfile exits 1 saying which pid
holds it, a stale pidfile is taken over, SIGTERM removes it, and a
pidfile that is a symbolic link is refused.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from fp.base import wait_for
from fp.logs import READY_RE, LogFile
from fp.net import EchoClient, free_port, port_is_free
from fp.proc import all_procs, child_procs, is_alive, kill_tree, proc_stat, read_pid


def live_children(pid):
    return [p.pid for p in child_procs(pid) if is_alive(p.pid)]


def ancestors(pid):
    out = []
    while pid > 1:
        st = proc_stat(pid)
        if st is None:
            break
        pid = st.ppid
        out.append(pid)
    return out


def tty_nr(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[4])


def is_devnull(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    except FileNotFoundError:
        return False


def cmdline_mentions(text):
    """Pids of live processes whose command line contains `text`."""
    pids = []
    for p in all_procs():
        try:
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if text in cmd and is_alive(p.pid):
            pids.append(p.pid)
    return pids


@pytest.fixture
def daemons(tmp_path):
    """A list the test appends daemon master pids to; each is SIGKILLed
    with all its descendants in teardown (they left our session), and so
    is every process whose command line names the test's tmp_path: a
    daemon whose pid never made it to the list (its --pidfile or
    --log-file is there)."""
    pids = []
    yield pids
    for pid in pids + cmdline_mentions(str(tmp_path)):
        kill_tree(pid)


def start_daemon(run_cli, daemons, pidfile, *args):
    """Run `forkpool -D --pidfile PIDFILE ARGS`; return (result, seconds)."""
    t0 = time.monotonic()
    res = run_cli("-D", "--pidfile", pidfile, *args)
    took = time.monotonic() - t0
    pid = read_pid(pidfile)
    if res.returncode == 0 and pid is not None:
        daemons.append(pid)
    return res, took


def wait_gone(pids):
    wait_for(lambda: not any(is_alive(p) for p in pids),
             what=lambda: f"processes {[p for p in pids if is_alive(p)]} to exit")


def test_daemon_with_pidfile(run_cli, daemons, tmp_path):
    port = free_port()
    pidfile = str(tmp_path / "forkpool.pid")
    log = LogFile(str(tmp_path / "forkpool.log"))
    res, took = start_daemon(run_cli, daemons, pidfile, "--log-file", log.path,
                             "-b", f"127.0.0.1:{port}", "-k", "echo", "-w", "2")
    assert res.returncode == 0, f"exit {res.returncode}; stderr:\n{res.stderr}"
    assert took < 10, f"forkpool -D took {took:.1f} s to return"
    assert res.stderr == "", res.stderr

    # The pidfile holds the daemon master's pid, the one that logs.
    pid = read_pid(pidfile)
    assert pid is not None, "no pid in the pidfile"
    assert is_alive(pid)
    m = wait_for(lambda: re.search(r"master pid (\d+) starting", log.text()),
                 what=lambda: f"the master's start line\n{log.tail()}")
    assert int(m.group(1)) == pid

    # Detached: re-parented to init or a subreaper (one of our ancestors),
    # a session other than ours, no controlling terminal, cwd /, stdio on
    # /dev/null.
    st = proc_stat(pid)
    assert st.ppid == 1 or st.ppid in ancestors(os.getpid()), (
        f"the daemon's parent is {st.ppid}")
    assert st.session != os.getsid(0)
    assert tty_nr(pid) == 0
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    for fd in (0, 1, 2):
        assert is_devnull(pid, fd), f"fd {fd} of the daemon is not /dev/null"

    # Workers serve.
    wait_for(lambda: len(READY_RE.findall(log.text())) >= 2 and len(live_children(pid)) == 2,
             what=lambda: f"2 ready workers\n{log.tail()}")
    with EchoClient(("127.0.0.1", port)) as c:
        assert c.echo(b"hello daemon\n") == b"hello daemon\n"

    # A second master with the same pidfile refuses, naming the holder.
    port2 = free_port()
    log2 = LogFile(str(tmp_path / "second.log"))
    res2, _ = start_daemon(run_cli, daemons, pidfile, "--log-file", log2.path,
                           "-b", f"127.0.0.1:{port2}", "-k", "echo", "-w", "1")
    assert res2.returncode == 1, f"exit {res2.returncode}; stderr:\n{res2.stderr}"
    said = res2.stderr + log2.text()
    assert re.search(rf"held by pid {pid}\b", said), said
    assert read_pid(pidfile) == pid
    wait_for(lambda: not cmdline_mentions(log2.path) and port_is_free(port2),
             what="the second master to be gone")

    # SIGTERM: everything exits and the pidfile goes.
    workers = live_children(pid)
    os.kill(pid, signal.SIGTERM)
    wait_gone([pid] + workers)
    wait_for(lambda: not os.path.exists(pidfile), what="the pidfile to be removed")
    log.text()
    wait_for(lambda: "shutdown complete" in log.text(), what=lambda: log.tail())


def test_stale_pidfile_is_taken_over(run_cli, daemons, tmp_path):
    # A pid that surely belongs to no process now.
    p = subprocess.Popen(["true"])
    p.wait()
    pidfile = tmp_path / "stale.pid"
    pidfile.write_text(f"{p.pid}\n")
    port = free_port()
    res, _ = start_daemon(run_cli, daemons, str(pidfile), "--log-file",
                          str(tmp_path / "log"), "-b", f"127.0.0.1:{port}",
                          "-k", "echo", "-w", "1")
    assert res.returncode == 0, res.stderr
    pid = read_pid(str(pidfile))
    assert pid is not None and pid != p.pid
    assert is_alive(pid)
    with EchoClient(("127.0.0.1", port)) as c:
        assert c.echo(b"x\n") == b"x\n"
    os.kill(pid, signal.SIGTERM)
    wait_gone([pid])
    wait_for(lambda: not pidfile.exists(), what="the pidfile to be removed")


def test_daemon_relative_paths(forkpool_bin, daemons, tmp_path):
    """The daemon runs in /, yet relative --pidfile/--log-file land where
    the command was run."""
    port = free_port()
    res = subprocess.run(
        [forkpool_bin, "-D", "--pidfile", "rel.pid", "--log-file", "rel.log",
         "-b", f"127.0.0.1:{port}", "-k", "echo", "-w", "1"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=20, start_new_session=True)
    pid = read_pid(str(tmp_path / "rel.pid"))
    if pid is not None:
        daemons.append(pid)
    assert res.returncode == 0, res.stderr
    assert pid is not None and is_alive(pid)
    wait_for(lambda: "ready" in (tmp_path / "rel.log").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_gone([pid])
    wait_for(lambda: not (tmp_path / "rel.pid").exists(), what="the pidfile to be removed")


def test_daemon_that_cannot_take_its_pidfile_exits_1(run_cli, daemons, tmp_path):
    pidfile = str(tmp_path / "no" / "such" / "dir" / "forkpool.pid")
    port = free_port()
    res, took = start_daemon(run_cli, daemons, pidfile, "-b", f"127.0.0.1:{port}",
                             "-k", "echo", "-w", "1")
    assert res.returncode == 1, f"exit {res.returncode}; stderr:\n{res.stderr}"
    assert took < 10
    # Without --log-file the daemon's log is stderr until it reports, so
    # the reason reaches whoever started it.
    assert pidfile in res.stderr, res.stderr
    wait_for(lambda: not cmdline_mentions(pidfile) and port_is_free(port),
             what="the failed daemon to be gone")


def test_pidfile_without_daemon(forkpool, tmp_path):
    pidfile = str(tmp_path / "fg.pid")
    m = forkpool("-w", "1", "--pidfile", pidfile)
    m.wait_pool(1)
    wait_for(lambda: read_pid(pidfile) == m.pid,
             what=lambda: f"pid {m.pid} in the pidfile (it holds {read_pid(pidfile)})")

    second = forkpool("-w", "1", "--pidfile", pidfile)
    assert second.wait_exit() == 1
    assert second.find(rf"held by pid {m.pid}\b"), second.describe()
    assert read_pid(pidfile) == m.pid

    assert m.stop() == 0
    assert not os.path.exists(pidfile)


def test_a_pidfile_that_is_a_symlink_is_refused(run_cli, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "forkpool.pid"
    os.symlink(target, link)
    res = run_cli("-b", "127.0.0.1:0", "--pidfile", link)
    assert res.returncode == 1, res
    lines = [l for l in res.stderr.splitlines() if l.strip() and "listening on" not in l]
    assert len(lines) == 1 and "symbolic link" in lines[0] and str(link) in lines[0], res.stderr
    assert target.read_text() == "keep me\n"
    assert os.path.islink(link)
