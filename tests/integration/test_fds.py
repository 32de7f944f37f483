"""A worker holds only its own descriptors: stdin/out/err, its channel to
the master, the listeners, and its own loop's descriptors -- never another
worker's channel, nor anything the master opened for itself (its epoll,
its signal socketpair, pidfds...)."""

import os
import re
import signal

from conftest import echo_roundtrip, fd_inodes, fd_table, free_port, listen_inodes

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
