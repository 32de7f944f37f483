"""A worker holds only its own descriptors: stdin/out/err, its channel to
the master, the listeners, and its own loop's descriptors -- never another
worker's channel, nor anything the master opened for itself (its epoll,
its signal socketpair, pidfds...)."""

import os
import re
import resource
import signal
import subprocess

from fp.base import wait_for
from fp.net import echo_roundtrip, free_port
from fp.proc import all_procs, fd_inodes, fd_table, listen_inodes

# What a worker's fds >= 3 may be: sockets (channel, listeners, its loop's
# signal socketpair), pipes (its loop's notification pipe) and the
# anonymous inodes of its own event loop.  Not regular files, directories,
# devices, pidfds, ...
ALLOWED = re.compile(
    r"^(socket:\[\d+\]|pipe:\[\d+\]|anon_inode:\[(eventpoll|eventfd|timerfd|signalfd)\])$")
MAX_FDS = 16


def epoll_watched_inodes(pid, fd):
    """Inodes of the files the epoll instance at `fd` watches (from fdinfo)."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return {int(m.group(1), 16) for m in re.finditer(r"^tfd:.*\bino:([0-9a-f]+)", f.read(), re.M)}


def own_inodes(pid):
    out = set()
    for fd in fd_table(pid):
        try:
            out.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except FileNotFoundError:
            pass
    return out


def fd_problems(master, pool, listeners):
    """Everything wrong with the fd tables of the workers in `pool`."""
    problems = []
    tables = {pid: fd_table(pid) for pid in pool.values()}
    inodes = {pid: fd_inodes(pid, kinds=("socket", "pipe"), min_fd=3) for pid in pool.values()}
    master_inodes = {v: k for k, v in fd_inodes(master.pid, kinds=("socket", "pipe")).items()}
    for slot, pid in sorted(pool.items()):
        who = f"worker {slot} pid {pid}"
        table = tables[pid]
        for fd, target in sorted(table.items()):
            if fd >= 3 and not ALLOWED.match(target):
                problems.append(f"{who}: fd {fd} -> {target} is not one of a worker's own kinds")
        held = set(inodes[pid].values())
        missing = listeners - held
        if missing:
            problems.append(f"{who}: does not hold listener inode(s) {sorted(missing)}")
        if not (held - listeners):
            problems.append(f"{who}: holds no socket besides the listeners (where is its channel?)")
        for fd, ino in sorted(inodes[pid].items()):
            if ino in listeners:
                continue
            for other_slot, other in pool.items():
                if other != pid and ino in inodes[other].values():
                    problems.append(f"{who}: fd {fd} ({table.get(fd)}) is also held by "
                                    f"worker {other_slot} pid {other}")
            if ino in master_inodes:
                problems.append(f"{who}: fd {fd} ({table.get(fd)}) is also the master's "
                                f"fd {master_inodes[ino]}: a descriptor the master opened "
                                f"for itself, or one it should have closed after fork")
        epolls = [fd for fd, t in table.items() if t == "anon_inode:[eventpoll]"]
        if len(epolls) != 1:
            problems.append(f"{who}: {len(epolls)} epoll instances {epolls}, expected its own loop's one")
        mine = own_inodes(pid)
        for fd in epolls:
            foreign = epoll_watched_inodes(pid, fd) - mine
            if foreign:
                problems.append(f"{who}: the epoll at fd {fd} watches inode(s) {sorted(foreign)} "
                                f"the worker does not hold: it is another process's loop "
                                f"(the master's?)")
        if len(table) > MAX_FDS:
            problems.append(f"{who}: {len(table)} fds, expected at most {MAX_FDS}: {table}")
    counts = {pid: len(t) for pid, t in tables.items()}
    if len(set(counts.values())) > 1:
        problems.append(f"workers hold different numbers of fds: {counts}\n"
                        + "\n".join(f"  {pid}: {sorted(t.items())}" for pid, t in tables.items()))
    return problems


def test_worker_fds_are_its_own(forkpool):
    m = forkpool("-w", "3")
    pool = m.wait_pool(3)
    lis = listen_inodes(m.port)
    assert lis
    problems = fd_problems(m, pool, lis)
    assert not problems, "\n".join(problems)


def test_respawned_worker_fds_are_its_own(forkpool):
    # A replacement is forked while the master holds every other worker's
    # channel: the case where a leak shows up first.
    m = forkpool("-w", "3")
    pool = m.wait_pool(3)
    for slot in (0, 2):
        old = pool[slot]
        os.kill(old, signal.SIGKILL)
        m.wait_respawn(slot, old)
        pool = m.wait_pool(3)
    problems = fd_problems(m, pool, listen_inodes(m.port))
    assert not problems, "\n".join(problems)


def test_two_binds_both_inherited(forkpool):
    second = free_port()
    m = forkpool("-w", "2", "-b", f"127.0.0.1:{second}")
    pool = m.wait_pool(2)
    lis = listen_inodes(m.port) | listen_inodes(second)
    assert len(lis) >= 2, f"expected a listener on each of ports {m.port} and {second}"
    problems = fd_problems(m, pool, lis)
    assert not problems, "\n".join(problems)
    for port in (m.port, second):
        m.wait_log(rf"listening on 127\.0\.0\.1:{port}\b")
        assert echo_roundtrip(("127.0.0.1", port))


def limits_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def test_a_pool_that_cannot_fit_the_fd_limit_fails_at_start_naming_both(spawn, tmp_path):
    """Soft = hard = 256 and 100 workers (4 fds each in the master, twice
    during a reload): refused at start in one line, not half-way."""
    err = tmp_path / "stderr"
    with open(err, "wb") as e:
        proc = spawn("-w", "100", "-b", f"127.0.0.1:{free_port()}", stderr=e,
                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    assert proc.wait(20) == 1
    lines = [l for l in err.read_text().splitlines() if l.strip()]
    assert len(lines) == 1 + sum("listening on" in l for l in lines), lines
    line = [l for l in lines if "listening on" not in l][0]
    assert re.search(r"100 workers need up to (\d+) open files in the master, but its "
                     r"limit is 256", line), line
    assert int(re.search(r"need up to (\d+)", line).group(1)) > 256
    assert "started" not in err.read_text(), "a worker was forked"


def test_the_soft_fd_limit_is_raised_to_the_hard_one(spawn, tmp_path):
    sock = str(tmp_path / "c.sock")
    proc = spawn("-w", "40", "-k", "echo", "-b", f"127.0.0.1:{free_port()}",
                 "--control", sock,
                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 4096)))
    wait_for(lambda: os.path.exists(sock), what="the control socket")
    assert limits_nofile(proc.pid) == (4096, 4096)
    wait_for(lambda: len(child_pids(proc.pid)) == 40, what="40 workers")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0


def test_scaling_past_the_fd_limit_is_refused_with_the_numbers(spawn, forkpool_bin, tmp_path):
    sock = str(tmp_path / "c.sock")
    proc = spawn("-w", "2", "-k", "echo", "-b", f"127.0.0.1:{free_port()}", "--control", sock,
                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)))
    wait_for(lambda: os.path.exists(sock), what="the control socket")
    res = subprocess.run([forkpool_bin, "ctl", "--control", sock, "scale", "30"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 1 and re.search(r"30 workers need up to \d+ open files in the "
                                             r"master; its limit is 200", res.stderr), res
    res = subprocess.run([forkpool_bin, "ctl", "--control", sock, "scale", "4"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res
    wait_for(lambda: len(child_pids(proc.pid)) == 4, what="4 workers")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0


def child_pids(ppid):
    return [p.pid for p in all_procs() if p.ppid == ppid and p.state != "Z"]
