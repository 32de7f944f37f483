"""What a worker runs as: privilege drop (--user, --group: uids, gids and
supplementary groups, the parent-death signal kept), and no terminal
(stdin /dev/null, no /dev/tty, a process group of its own).

The chaos worker (tests/workers/chaos.c) reports what it runs as:
--say-creds and --say-tty.
"""

import fcntl
import grp
import os
import pwd
import re
import signal
import threading

import pytest

from fp.base import TIMEOUT, assert_one_line_error, wait_for
from fp.net import assert_serves_alone, echo_roundtrip, free_port
from fp.proc import proc_status

# ---------------------------------------------------------------------------
# Privilege drop


# The chaos module may sit where --user cannot read it (a checkout under
# /root, mode 0700): the master loads it (--preload), since these tests are
# about what the workers run as.  A module loaded by each worker, as its
# user, is test_modules.py's.
PRELOAD = ("--preload",)


def ids(line):
    return [int(x) for x in line.split()]


def nobody_and_group(with_group):
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this system")
    if not with_group:
        return pw, pw.pw_gid, None
    for name in ("nogroup", "nobody"):
        try:
            return pw, grp.getgrnam(name).gr_gid, name
        except KeyError:
            pass
    pytest.skip("neither group 'nogroup' nor 'nobody' exists")


@pytest.mark.parametrize("with_group", [False, True], ids=["user", "user+group"])
def test_workers_drop_privileges(forkpool, with_group):
    if os.geteuid() != 0:
        pytest.skip(f"privilege drop needs root; the tests run as uid {os.geteuid()}")
    pw, gid, group = nobody_and_group(with_group)
    args = ["-w", "2", "--user", "nobody"] + (["--group", group] if group else [])
    m = forkpool(*args)
    pool = m.wait_pool(2)
    for pid in pool.values():
        st = proc_status(pid)
        assert ids(st["Uid"]) == [pw.pw_uid] * 4, f"pid {pid}: Uid {st['Uid']}"
        assert ids(st["Gid"]) == [gid] * 4, f"pid {pid}: Gid {st['Gid']}"
        assert ids(st["Groups"]) == [gid], f"pid {pid}: Groups {st['Groups']!r}"
    master = proc_status(m.pid)
    assert ids(master["Uid"]) == [0] * 4 and ids(master["Gid"]) == [0] * 4, master
    # The workers still serve from the listener the master bound as root.
    for _ in range(4):
        assert echo_roundtrip(("127.0.0.1", m.port))
    for pid in pool.values():
        assert_serves_alone(m, pid)
    assert m.stop() == 0


def test_a_worker_that_dropped_privileges_keeps_its_parent_death_signal(forkpool, chaos):
    """DESIGN.md: a worker gets SIGTERM via PR_SET_PDEATHSIG when its
    master dies.  The kernel clears that setting when a process changes
    its credentials, so it must be set (again) after the switch to --user."""
    if os.geteuid() != 0:
        pytest.skip(f"privilege drop needs root; the tests run as uid {os.geteuid()}")
    nobody_and_group(False)
    m = forkpool("-w", "1", "--user", "nobody", "-k", chaos, *PRELOAD, "--", "--say-creds")
    pid = m.wait_pool(1)[0]
    line = m.wait_out(rf"chaos worker 0 pid {pid}: creds uid (\S+) gid (\S+) groups (\S+) "
                      rf"pdeathsig (-?\d+)$")
    uid = pwd.getpwnam("nobody").pw_uid
    assert line.group(1) == f"{uid}/{uid}/{uid}", line.string
    assert int(line.group(4)) == signal.SIGTERM, (
        f"the worker running as nobody has parent-death signal {line.group(4)}, not SIGTERM "
        f"({int(signal.SIGTERM)}): {line.string}")


def test_an_unknown_user_is_a_usage_error(run_cli):
    res = run_cli("-b", "127.0.0.1:0", "--user", "no-such-user-xyz")
    assert_one_line_error(res, "--user")
    assert "no-such-user-xyz" in res.stderr


def open_pty_session():
    """A pseudo-terminal: (master fd, slave fd, preexec_fn making it the
    controlling terminal of a new session, as a login shell has)."""
    import pty
    import termios

    master_fd, slave_fd = pty.openpty()

    def preexec():
        os.setsid()
        fcntl.ioctl(slave_fd, termios.TIOCSCTTY, 0)
    return master_fd, slave_fd, preexec


@pytest.mark.parametrize("as_user", [False, True], ids=["root-or-self", "user-nobody"])
def test_workers_get_no_terminal(spawn, chaos, tmp_path, as_user):
    """Run in the foreground of a terminal (a session with it as its
    controlling terminal), a worker has /dev/null on stdin, cannot open
    /dev/tty, and is in a process group of its own in the master's
    session, with and without --user."""
    if as_user and os.geteuid() != 0:
        pytest.skip("--user needs root")
    out = tmp_path / "worker.out"
    master_fd, slave_fd, preexec = open_pty_session()
    drained = threading.Event()

    def drain():  # read the terminal, as a terminal emulator would
        while not drained.is_set():
            try:
                if not os.read(master_fd, 65536):
                    return
            except OSError:
                return
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    args = ["-w", "2", "-b", f"127.0.0.1:{free_port()}", "--stdout", out]
    if as_user:
        args += ["--user", "nobody"] + (["--group", nobody_and_group(True)[2]])
    proc = spawn(*args, "-k", chaos, *PRELOAD, "--", "--say-tty",
                 stdin=slave_fd, stdout=slave_fd, stderr=slave_fd,
                 preexec_fn=preexec, session=False)
    os.close(slave_fd)
    try:
        lines = wait_for(lambda: (re.findall(r"chaos worker \d+ pid (\d+): stdin (\S+) tty (\S+) "
                                             r"pgrp (\d+) sid (\d+)",
                                             out.read_text() if out.exists() else "")
                                  or None) if len(re.findall(
                                      r"stdin", out.read_text() if out.exists() else "")) >= 2
                         else None, what="the workers' --say-tty lines")
        assert len(lines) >= 2
        for pid, stdin, tty, pgrp, sid in lines:
            assert stdin == "/dev/null", lines
            assert tty == "ENXIO", f"worker {pid} can open /dev/tty: {lines}"
            assert pgrp == pid, f"worker {pid} is in process group {pgrp}"
            assert int(sid) == proc.pid, f"worker {pid} is in session {sid}"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        drained.set()
        os.close(master_fd)


def test_a_numeric_user_without_a_passwd_entry_needs_a_group(run_cli):
    uid = 54321
    try:
        pwd.getpwuid(uid)
        pytest.skip(f"uid {uid} has a passwd entry here")
    except KeyError:
        pass
    res = run_cli("-b", "127.0.0.1:0", "--user", str(uid))
    assert_one_line_error(res, "--user")
    assert "--group" in res.stderr and str(uid) in res.stderr


def test_a_numeric_user_gets_only_the_named_group(forkpool, chaos):
    if os.geteuid() != 0:
        pytest.skip("--user needs root")
    uid = 54321
    _, gid, group = nobody_and_group(True)
    m = forkpool("-w", "1", "--user", str(uid), "--group", group, "-k", chaos, *PRELOAD, "--",
                 "--say-creds")
    pid = m.wait_pool(1)[0]
    line = m.wait_out(rf"chaos worker 0 pid {pid}: creds uid (\S+) gid (\S+) groups (\S+) ")
    assert line.group(1) == f"{uid}/{uid}/{uid}", line.string
    assert line.group(2) == f"{gid}/{gid}/{gid}", line.string
    assert line.group(3) == str(gid), f"supplementary groups: {line.string}"
    assert m.stop() == 0


def test_a_named_user_gets_its_own_groups_not_the_masters(forkpool, chaos):
    if os.geteuid() != 0:
        pytest.skip("--user needs root")
    pw = pwd.getpwnam("nobody")
    want = sorted(os.getgrouplist("nobody", pw.pw_gid))
    m = forkpool("-w", "1", "--user", "nobody", "-k", chaos, *PRELOAD, "--", "--say-creds")
    pid = m.wait_pool(1)[0]
    line = m.wait_out(rf"chaos worker 0 pid {pid}: creds uid \S+ gid (\S+) groups (\S+) ")
    assert line.group(1) == f"{pw.pw_gid}/{pw.pw_gid}/{pw.pw_gid}", line.string
    assert sorted(int(g) for g in line.group(2).split(",")) == want, line.string
    assert m.stop() == 0
