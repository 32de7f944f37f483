"""Binary upgrade in place (SIGUSR2, `forkpool ctl upgrade`): the master
runs the binary now on disk with --check, hands its state over in a memfd
and execve()s it, keeping its pid; the new image adopts the listeners, the
control socket and the workers, then replaces every worker by a rolling
reload.

Also under systemd (notify messages, a socket passed by
systemd-socket-activate), as PID 1 of a PID namespace, with --daemon and
--pidfile, and with --reuse-port.

Each test runs a copy of the binary under test, so that it can replace it
the way a package manager does: a new file renamed over the old one (the
master's /proc/PID/exe then ends in "(deleted)").  "New" binaries that are
scripts (one that exits 1, one that kills a worker or rewrites the state
while the master is between images) wrap the real binary.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys

import pytest

from fp.base import TIMEOUT, wait_for
from fp.control import by_slot, control, control_status
from fp.http import HttpConn, HttpLoad
from fp.logs import LogFile, log_time
from fp.master import Master
from fp.net import EchoClient, free_port
from fp.proc import child_procs, fd_inodes, fd_table, is_alive, listen_inodes, read_pid


def exe_of(pid):
    """Where /proc/PID/exe points ("... (deleted)" once replaced)."""
    return os.readlink(f"/proc/{pid}/exe")


class Install:
    """A copy of the binary under test at `path`, replaced by rename."""

    def __init__(self, real, directory):
        self.real = real
        self.dir = directory
        self.path = os.path.join(directory, "forkpool")
        self.n = 0
        self.install_copy()

    def _rename_in(self, write):
        """Write a new file next to the binary, then rename it over."""
        self.n += 1
        tmp = os.path.join(self.dir, f".forkpool.new{self.n}")
        write(tmp)
        os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IXUSR)
        os.rename(tmp, self.path)

    def install_copy(self):
        """A fresh copy of the real binary (a new inode)."""
        if self.n == 0:
            shutil.copy2(self.real, self.path)
            self.n = 1
        else:
            self._rename_in(lambda tmp: shutil.copy2(self.real, tmp))

    def install_script(self, text):
        """A script in place of the binary ("{real}" names the real one)."""
        def write(tmp):
            with open(tmp, "w") as f:
                f.write(text.replace("{real}", self.real))
        self._rename_in(write)


@pytest.fixture
def install(forkpool_bin, tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    return Install(forkpool_bin, str(d))


@pytest.fixture
def upgradable(install, tmp_path):
    """Start masters from the copy: upgradable(*args, port=None,
    worker="http") -> Master, with `-b 127.0.0.1:PORT -k WORKER` first.
    Every master and its processes are SIGKILLed in teardown."""
    masters = []

    def start(*args, worker="http", bind=True, port=None):
        args = [str(a) for a in args]
        if worker is not None:
            args = ["-k", worker] + args
        if bind:
            port = port or free_port()
            args = ["-b", f"127.0.0.1:{port}"] + args
        m = Master(install.path, args, str(tmp_path),
                   name=f"forkpool{len(masters)}", port=port)
        masters.append(m)
        return m.start()

    yield start
    for m in masters:
        m.kill_all()


def upgrade_done(m, count=1):
    """Wait for the count-th "upgrade complete" line."""
    return m.wait_log(r"upgrade complete: the workers run the new binary", count=count)


def assert_all_new(m, install, old, n, exe=None):
    """The pool is n ready workers, none of `old` ({slot: pid}), each
    running the binary now at install.path (or `exe`); the old ones
    exited 0."""
    def replaced():
        pool = m.pool_state(n)
        if pool is None or set(pool.values()) & set(old.values()):
            return None
        return pool
    new = wait_for(replaced, what=lambda: f"{n} new workers\n{m.describe()}")
    for pid in new.values():
        assert exe_of(pid) == (exe or install.path), (pid, exe_of(pid))
    for slot, pid in old.items():
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b")
    return new


def served_by_new(load, new):
    """Wait until the load was served 50 times by the workers `new`."""
    wait_for(lambda: sum(load.served_by.get(p, 0) for p in new.values()) >= 50,
             what=lambda: f"the new workers {new} to serve: {load.summary()}")


def assert_master_upgraded(m, install, exe=None):
    assert m.alive(), m.describe()
    assert exe_of(m.pid) == (exe or install.path), exe_of(m.pid)
    m.wait_no_zombies()


# ---------------------------------------------------------------------------
# Upgrades that work


def test_sigusr2_under_keepalive_load_keeps_the_pid_and_replaces_every_worker(
        upgradable, install):
    m = upgradable("-w", "3")
    old = m.wait_pool(3)
    install.install_copy()
    assert exe_of(m.pid) == install.path + " (deleted)"
    load = HttpLoad(m.port, keepalive=8, fresh=0).start()
    try:
        wait_for(lambda: load.total() > 50, what="the load to run")
        m.signal(signal.SIGUSR2)
        upgrade_done(m)
        new = assert_all_new(m, install, old, 3)
        # The new workers serve (the clients moved over when the old ones
        # closed their connections; how the kernel spreads them is its
        # business).
        served_by_new(load, new)
    finally:
        load.stop()
        load.join()
    assert not load.failures, load.summary()
    assert_master_upgraded(m, install)
    m.wait_log(rf"upgrade: master pid {m.pid} now runs {install.path} .*adopted 1 listeners "
               r"and 3 processes")
    assert not m.find(r"upgrade failed|hung|killed by|cannot")
    assert m.stop() == 0


def test_a_second_upgrade_leaves_the_master_fd_count_as_it_was(upgradable, install, sock_path):
    m = upgradable("-w", "2", "--control", sock_path)
    old = m.wait_pool(2)
    install.install_copy()
    m.signal(signal.SIGUSR2)
    upgrade_done(m)
    mid = assert_all_new(m, install, old, 2)
    fds = fd_table(m.pid)
    install.install_copy()
    m.signal(signal.SIGUSR2)
    upgrade_done(m, count=2)
    assert_all_new(m, install, mid, 2)
    after = fd_table(m.pid)
    assert len(after) == len(fds), f"fds before {fds}\nafter {after}"
    # Same kinds of fds too (sockets, pipes, memfds...).
    kind = lambda t: sorted(v.split(":")[0].split("[")[0] for v in t.values())
    assert kind(after) == kind(fds), (fds, after)
    assert_master_upgraded(m, install)
    assert control_status(sock_path)["pid"] == m.pid
    assert m.stop() == 0


def test_ctl_upgrade_answers_once_the_new_image_took_over(upgradable, install, sock_path,
                                                           run_cli):
    m = upgradable("-w", "2", "--control", sock_path)
    old = m.wait_pool(2)
    install.install_copy()
    res = run_cli("ctl", "--control", sock_path, "upgrade", timeout=TIMEOUT * 3)
    assert res.returncode == 0, res
    assert res.stdout.startswith(f"upgraded: master pid {m.pid} runs forkpool "), res
    # By the time it answers, the new image runs (and says so first).
    assert m.find(rf"upgrade: master pid {m.pid} now runs {install.path}"), m.describe()
    st = control_status(sock_path)
    assert st["pid"] == m.pid, st
    upgrade_done(m)
    assert_all_new(m, install, old, 2)
    st = control_status(sock_path)
    assert st["upgrade"] is None and st["reloading"] is False, st
    # The raw protocol: its answer carries the request's id.
    install.install_copy()
    rep = control(sock_path, {"cmd": "upgrade"}, timeout=TIMEOUT * 3)
    assert rep["ok"] is True and rep["result"]["pid"] == m.pid, rep
    assert rep["result"]["fallback"] is False, rep
    upgrade_done(m, count=2)
    assert_master_upgraded(m, install)


def test_upgrade_during_a_rolling_reload(upgradable, install, sock_path):
    # An echo worker; a client held on it keeps it draining after a
    # reload replaced it, and a second reload then waits for that slot:
    # a reload under way, with a slot holding two processes.
    m = upgradable("-w", "1", "--control", sock_path, "--graceful-timeout", "120",
                   worker="echo")
    pool = m.wait_pool(1)
    client = EchoClient(("127.0.0.1", m.port))
    try:
        client.echo(b"held\n")
        m.signal(signal.SIGHUP)
        m.wait_log(rf"reload: worker 0 pid (\d+) took over; pid {pool[0]} drains$")
        m.wait_log(r"\breload complete$")
        control(sock_path, {"cmd": "reload"})
        st = control_status(sock_path)
        assert st["reloading"] is True, st
        mid = {w["id"]: w["pid"] for w in st["workers"] if w["role"] == "worker"}

        install.install_copy()
        m.signal(signal.SIGUSR2)
        m.wait_log(rf"upgrade: master pid {m.pid} now runs .*adopted 1 listeners and 2 "
                   r"processes")
        # The draining worker was handed over with its connection.
        client.echo(b"still there\n")
        st = control_status(sock_path)
        assert ("draining", "stopping", pool[0]) in by_slot(st)[0], st
    finally:
        client.close()
    m.wait_log(rf"worker 0 pid {pool[0]} exited with status 0\b")
    upgrade_done(m)
    new = assert_all_new(m, install, mid, 1)
    assert not set(new.values()) & set(pool.values())
    assert_master_upgraded(m, install)


def test_a_worker_killed_during_the_hand_over_is_replaced(upgradable, install, tmp_path):
    m = upgradable("-w", "2")
    old = m.wait_pool(2)
    victim = tmp_path / "victim"
    victim.write_text(f"{old[1]}\n")
    # The "new binary" runs in the master's process, between the images:
    # it SIGKILLs worker 1 there, then becomes the real binary.  The
    # worker's exit happens while no image of the master can see it.
    install.install_script(
        "#!/bin/sh\n"
        'case "$1" in --check) exec "{real}" "$@";; esac\n'
        f'kill -KILL "$(cat {victim})"\n'
        'exec "{real}" "$@"\n')
    m.signal(signal.SIGUSR2)
    m.wait_log(rf"worker 1 pid {old[1]} killed by SIGKILL")
    upgrade_done(m)
    new = m.wait_pool(2)
    assert not set(new.values()) & set(old.values()), (old, new)
    assert not is_alive(old[1])
    m.wait_log(rf"worker 0 pid {old[0]} exited with status 0\b")
    # Every exit was reaped, the one between the images too: a zombie
    # may only be one just exiting (the master reaps it at once).
    assert m.alive()
    wait_for(lambda: not m.zombies(), what=lambda: f"no zombie child of the master "
             f"(now {sorted(m.zombies())})\n{m.describe()}")


def test_a_slow_check_refuses_a_second_upgrade_and_holds_a_reload(upgradable, install,
                                                                   tmp_path, sock_path,
                                                                   run_cli):
    m = upgradable("-w", "2", "--control", sock_path)
    old = m.wait_pool(2)
    go = tmp_path / "go"
    # The check waits for the test's word (bounded: 20 s).
    install.install_script(
        "#!/bin/sh\n"
        'if [ "$1" = --check ]; then\n'
        "  n=0\n"
        f'  while [ ! -e "{go}" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done\n'
        "fi\n"
        'exec "{real}" "$@"\n')
    m.signal(signal.SIGUSR2)
    m.wait_log(r"upgrade \(SIGUSR2\): checking")
    assert control_status(sock_path)["upgrade"] == "checking"
    res = run_cli("ctl", "--control", sock_path, "status")
    assert res.returncode == 0 and ", binary upgrade: checking" in res.stdout, res
    m.signal(signal.SIGUSR2)
    m.wait_log(r"upgrade \(SIGUSR2\) refused: an upgrade is under way")
    rep = control(sock_path, {"cmd": "upgrade"})
    assert rep["ok"] is False and "an upgrade is under way" in rep["error"], rep
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload: waits for the binary upgrade under way")
    st = control_status(sock_path)
    assert st["reloading"] is False and st["live"] == 2, st
    assert {w["pid"] for w in st["workers"]} == set(old.values()), st
    go.write_text("")
    upgrade_done(m)
    # The script execs the real binary: that is what runs now.
    assert_all_new(m, install, old, 2, exe=install.real)
    assert_master_upgraded(m, install, exe=install.real)


def test_daemon_with_pidfile_keeps_its_pid_and_pidfile(install, run_cli, tmp_path, sock_path):
    pidfile = str(tmp_path / "fp.pid")
    log = LogFile(str(tmp_path / "fp.log"))
    port = free_port()
    # The daemon runs the copy (run_cli runs the binary under test).
    proc = subprocess.run(
        [install.path, "-D", "--pidfile", pidfile, "--log-file", log.path, "-w", "2",
         "-k", "http", "-b", f"127.0.0.1:{port}", "--control", sock_path],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT,
        start_new_session=True)
    assert proc.returncode == 0, proc
    pid = read_pid(pidfile)
    assert pid is not None
    try:
        def pool():
            kids = {p.pid for p in child_procs(pid) if p.state != "Z"}
            return kids if len(kids) == 2 else None
        old = wait_for(pool, what="two workers")
        before = open(pidfile).read()
        install.install_copy()
        os.kill(pid, signal.SIGUSR2)
        wait_for(lambda: any("upgrade complete" in l for l in log.lines()),
                 what=lambda: f"the upgrade to complete\n{log.tail()}")
        wait_for(lambda: pool() and pool().isdisjoint(old),
                 what="the workers to be replaced")
        assert exe_of(pid) == install.path
        assert open(pidfile).read() == before == f"{pid}\n"
        # Still held with its lock: a second master refuses.
        res = run_cli("--pidfile", pidfile, "-b", f"127.0.0.1:{free_port()}", "-w", "1")
        assert res.returncode == 1 and "held" in res.stderr, res
        with HttpConn(port) as c:
            assert c.request().status == 200
        assert control_status(sock_path)["pid"] == pid
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(pidfile), what="the pidfile to be removed")
    finally:
        for p in [pid] + [c.pid for c in child_procs(pid)]:
            if is_alive(p):
                os.kill(p, signal.SIGKILL)


def tcp_migrate_req():
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def test_reuse_port_upgrade_under_load(upgradable, install):
    m = upgradable("-w", "2", "--reuse-port")
    old = m.wait_pool(2)
    install.install_copy()
    load = HttpLoad(m.port, keepalive=6, fresh=2).start()
    try:
        wait_for(lambda: load.total() > 50, what="the load to run")
        m.signal(signal.SIGUSR2)
        upgrade_done(m)
        new = assert_all_new(m, install, old, 2)
        served_by_new(load, new)
    finally:
        load.stop()
        load.join()
    if tcp_migrate_req():
        assert not load.failures, load.summary()
    else:
        # Each worker closes its own socket when it stops, and what the
        # kernel queued there is reset (README: net.ipv4.tcp_migrate_req):
        # only a new connection's first request can fail that way, the
        # upgrade adds nothing to a reload there.
        bad = [(r.client, r.error) for r in load.requests
               if r.error is not None and not r.first]
        assert not bad, f"{bad}\n{load.summary()}"
    assert_master_upgraded(m, install)


# ---------------------------------------------------------------------------
# Upgrades that fail, or fall back


def test_a_failing_new_binary_leaves_the_master_serving_with_its_workers(
        upgradable, install, sock_path, run_cli):
    m = upgradable("-w", "2", "--control", sock_path)
    old = m.wait_pool(2)
    install.install_script("#!/bin/sh\necho \"not today: $1\" >&2\nexit 1\n")
    m.signal(signal.SIGUSR2)
    line = m.wait_log(r"upgrade failed: .*--check exited with status 1: not today: --check")
    assert "the master goes on" in line.string
    res = run_cli("ctl", "--control", sock_path, "upgrade", timeout=TIMEOUT * 3)
    assert res.returncode == 1 and "not today: --check" in res.stderr, res
    # A binary that is gone, or not executable.
    os.chmod(install.path, 0o644)
    rep = control(sock_path, {"cmd": "upgrade"})
    assert rep["ok"] is False and "Permission denied" in rep["error"], rep
    os.unlink(install.path)
    rep = control(sock_path, {"cmd": "upgrade"})
    assert rep["ok"] is False and "No such file" in rep["error"], rep
    # Nothing changed: the same workers serve, the old image runs.
    assert m.children() == set(old.values())
    assert exe_of(m.pid).endswith(" (deleted)")
    assert m.pool_state(2) == old
    with HttpConn(m.port) as c:
        assert int(c.request().headers["x-pid"]) in old.values()
    st = control_status(sock_path)
    assert st["pid"] == m.pid and st["upgrade"] is None, st
    assert not m.find(r"handing over")


def test_a_state_of_another_version_keeps_the_listeners_and_starts_fresh_workers(
        upgradable, install):
    m = upgradable("-w", "2")
    old = m.wait_pool(2)
    # Between the images, the state's version is made one this binary
    # does not read: it must fall back to the core.
    install.install_script(
        "#!/usr/bin/python3\n"
        "import os, sys\n"
        'if sys.argv[1:2] != ["--check"]:\n'
        '    fd = int(os.environ["FORKPOOL_UPGRADE_FD"])\n'
        "    data = os.pread(fd, 1 << 26, 0)\n"
        "    new = data.replace(b'\"forkpool-state\":1,', b'\"forkpool-state\":9,', 1)\n"
        "    assert new != data\n"
        "    os.pwrite(fd, new, 0)\n"
        'os.execv("{real}", ["{real}"] + sys.argv[1:])\n')
    load = HttpLoad(m.port, keepalive=6, fresh=2).start()
    try:
        wait_for(lambda: load.total() > 50, what="the load to run")
        m.signal(signal.SIGUSR2)
        m.wait_log(r"cannot read the state of the previous image \(its format is version 9")
        m.wait_log(r"stopping the 2 processes of the previous image")
        for pid in old.values():
            m.wait_log(rf"upgrade: pid {pid} of the previous image exited with status 0")
        new = m.wait_pool(2)
        assert not set(new.values()) & set(old.values())
        served_by_new(load, new)
    finally:
        load.stop()
        load.join()
    assert not load.failures, load.summary()
    assert m.alive()


def test_the_new_image_reads_what_its_workers_are_doing(upgradable, install, chaos):
    # The activity map is handed over (a memfd): a worker forked by the
    # new image writes its entry where the master reads it, and says so
    # when it hangs.
    m = upgradable("-w", "2", "--worker-timeout", "1", "--check-interval", "0.2",
                   "--graceful-timeout", "2", "--",
                   "--activity", "serving the upgrade test", "--hang-after", "1500",
                   worker=chaos)
    old = m.wait_pool(2)
    install.install_copy()
    m.signal(signal.SIGUSR2)
    upgrade_done(m)
    new = assert_all_new(m, install, old, 2)
    line = m.wait_log(r"worker \d+ pid (\d+) hung: .* was busy with \"serving the upgrade test\"")
    assert int(line.group(1)) not in old.values(), line.string
    assert not m.find(r"SIGSEGV|SIGBUS|SIGABRT"), m.describe()
    assert m.alive() and new


# ---------------------------------------------------------------------------
# Under systemd (notify, socket activation) and as PID 1 of a container

from test_container import UNSHARE, Container, ContainerMaster, unshare  # noqa: E402,F401
from test_systemd import (SdMaster, notify_socket, poke,  # noqa: E402,F401
                          socket_activate, wait_exec)


def test_under_systemd_with_an_activated_socket(install, tmp_path, socket_activate,
                                                 notify_socket):
    ns = notify_socket()
    port = free_port()
    m = SdMaster(install.path, ["-w", "2", "-k", "http"], str(tmp_path), name="sd",
                 env={"NOTIFY_SOCKET": ns.address},
                 prefix=[socket_activate, "-l", f"127.0.0.1:{port}", "-E", "NOTIFY_SOCKET"])
    try:
        m.start()
        m.port = port
        poke(("127.0.0.1", port))
        wait_exec(m)
        first = ns.wait("READY", "1")
        old = m.wait_pool(2)
        inode = fd_inodes(m.pid).get(3)
        assert inode and listen_inodes(port) == {inode}, m.describe()
        install.install_copy()
        load = HttpLoad(port, keepalive=6, fresh=2).start()
        try:
            wait_for(lambda: load.total() > 50, what="the load to run")
            m.signal(signal.SIGUSR2)
            reloading = ns.wait("RELOADING", "1", after=first)
            ready = ns.wait("READY", "1", after=reloading)
            upgrade_done(m)
            new = assert_all_new(m, install, old, 2)
            served_by_new(load, new)
        finally:
            load.stop()
            load.join()
        assert not load.failures, load.summary()
        # The socket systemd passed is the one still listening, at fd 3.
        assert fd_inodes(m.pid).get(3) == inode and listen_inodes(port) == {inode}
        # READY=1 once every worker of the new binary was ready; every
        # message from the same pid, the one systemd watches.
        for slot, pid in new.items():
            line = m.find(rf"\bworker {slot} pid {pid} ready\b")[0].string
            assert log_time(line) <= ready.time, (line, ready)
        assert {msg.pid for msg in ns.all()} == {m.pid}
        assert not ns.matching("MAINPID", after=first), "a new MAINPID after the upgrade"
        assert_master_upgraded(m, install)
        assert m.stop() == 0
    finally:
        m.kill_all()


def test_as_pid_1_of_a_container(install, tmp_path, unshare):
    port = free_port()
    m = ContainerMaster(unshare, install.path,
                        ["-w", "2", "-k", "http", "-b", f"127.0.0.1:{port}"], str(tmp_path))
    try:
        m.start()
        c = Container(m)
        c.wait_ready(2)
        old = {p.pid for p in child_procs(c.pid) if p.state != "Z"}
        install.install_copy()
        os.kill(c.pid, signal.SIGUSR2)
        upgrade_done(m)

        def replaced():
            kids = {p.pid for p in child_procs(c.pid) if p.state != "Z"}
            return kids if len(kids) == 2 and not kids & old else None
        new = wait_for(replaced, what=lambda: f"new workers\n{m.describe()}")
        assert exe_of(c.pid) == install.path
        for pid in new:
            assert exe_of(pid) == install.path
        assert ns_pid(c.pid) == 1
        with HttpConn(port) as conn:
            assert conn.request().status == 200
        c.terminate()
    finally:
        m.kill_all()


def ns_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return None


def fd_flags(pid):
    """{fd: the flags of its fdinfo} (O_CLOEXEC is 02000000)."""
    out = {}
    for fd in fd_table(pid):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("flags:"):
                        out[fd] = int(line.split()[1], 8)
        except FileNotFoundError:
            pass
    return out


def test_a_failed_execve_leaves_the_master_as_it_was(upgradable, install, sock_path, tmp_path):
    m = upgradable("-w", "2", "--control", sock_path)
    old = m.wait_pool(2)
    flags = fd_flags(m.pid)
    # The check passes, then puts a file that cannot be executed in its
    # place: the master's execve() fails after the hand-over was written.
    noexec = os.path.join(install.dir, ".noexec")
    install.install_script(
        "#!/bin/sh\n"
        f"printf 'not a program' > {noexec}\n"
        f"chmod 644 {noexec}\n"
        f'mv {noexec} "$0"\n'
        'exec "{real}" "$@"\n')
    rep = control(sock_path, {"cmd": "upgrade"}, timeout=TIMEOUT * 3)
    assert rep["ok"] is False and "execve(" in rep["error"], rep
    assert "Permission denied" in rep["error"] or "Exec format" in rep["error"], rep
    m.wait_log(r"upgrade: handing over to")
    m.wait_log(r"upgrade failed: execve\(.*; the master goes on")
    # As it was: the same workers, every fd close-on-exec as before, and
    # a master that still works them (a reload replaces both).
    assert fd_flags(m.pid) == flags
    assert control_status(sock_path)["upgrade"] is None
    assert m.pool_state(2) == old
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload complete")
    new = m.wait_pool(2)
    assert not set(new.values()) & set(old.values())
    with HttpConn(m.port) as c:
        assert int(c.request().headers["x-pid"]) in new.values()
    assert m.stop() == 0


def test_the_new_binary_reads_its_config_and_keeps_serving_what_it_cannot_bind(
        upgradable, install, tmp_path):
    port, busy = free_port(), free_port()
    conf = tmp_path / "fp.json"
    conf.write_text(json.dumps({"bind": [f"127.0.0.1:{port}"], "workers": 2,
                                "graceful-timeout": "30"}))
    m = upgradable("--config", conf, bind=False)
    m.port = port
    old = m.wait_pool(2)
    # The new config adds an address another process holds, and changes
    # a timeout: the new image applies what it can and serves on.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen(1)
        conf.write_text(json.dumps({"bind": [f"127.0.0.1:{port}", f"127.0.0.1:{busy}"],
                                    "workers": 2, "graceful-timeout": "7"}))
        install.install_copy()
        m.signal(signal.SIGUSR2)
        m.wait_log(rf"cannot bind --bind 127\.0\.0\.1:{busy}; serving the other addresses")
        upgrade_done(m)
    assert_all_new(m, install, old, 2)
    with HttpConn(port) as c:
        assert c.request().status == 200
    assert_master_upgraded(m, install)


def test_exec_notify_workers_through_an_upgrade(upgradable, install, tmp_path, sock_path):
    """-k exec --exec-type notify: the adopted programs' notify sockets are
    read as such by the new image (no "malformed" channel packets), and
    the replacements are gated on their READY=1 as usual."""
    import sys
    prog = tmp_path / "notify.py"
    prog.write_text(
        "import os, signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "a = os.environ['NOTIFY_SOCKET'].replace('@', '\\0', 1)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.sendto(b'READY=1\\nSTATUS=up', a)\n"
        "while True:\n"
        "    s.sendto(b'WATCHDOG=1', a)\n"
        "    time.sleep(0.2)\n")
    m = upgradable("-w", "2", "--exec-type", "notify", "--worker-timeout", "3",
                   "--control", sock_path, "--", sys.executable, str(prog), worker="exec")
    old = m.wait_pool(2)
    install.install_copy()
    m.signal(signal.SIGUSR2)
    upgrade_done(m)
    new = assert_all_new(m, install, old, 2, exe=os.path.realpath(sys.executable))
    assert not m.find(r"malformed|hung|upgrade failed|aborted"), m.describe()
    st = control_status(sock_path)
    assert {w["pid"]: w.get("activity") for w in st["workers"]} == {
        pid: "up" for pid in new.values()}, st
    assert m.stop() == 0
