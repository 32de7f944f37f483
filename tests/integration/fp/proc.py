"""/proc readers: processes and their trees, file descriptors, TCP
sockets, CPU time and memory; and killing what a test started."""

import collections
import os
import re
import signal
import subprocess
import time

# ---------------------------------------------------------------------------
# Processes


ProcStat = collections.namedtuple("ProcStat", "pid comm state ppid pgrp session")


def proc_stat(pid):
    """Parse /proc/PID/stat, or None if the process is gone.

    The command name sits in parentheses and may itself contain spaces and
    parentheses, so the fields are taken after the *last* ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        lpar = data.index(b"(")
        rpar = data.rindex(b")")
        fields = data[rpar + 2:].split()
        return ProcStat(
            pid,
            data[lpar + 1:rpar].decode(errors="replace"),
            fields[0].decode(),
            int(fields[1]),
            int(fields[2]),
            int(fields[3]),
        )
    except (ValueError, IndexError):
        return None


def all_procs():
    procs = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                procs.append(st)
    return procs


def child_procs(ppid):
    return [p for p in all_procs() if p.ppid == ppid]


def descendants(pid):
    """Pids of every descendant of `pid` (children first), zombies too."""
    by_parent = collections.defaultdict(list)
    for p in all_procs():
        by_parent[p.ppid].append(p.pid)
    found, i = [pid], 0
    while i < len(found):
        found += by_parent.get(found[i], [])
        i += 1
    return found[1:]


def is_zombie(pid):
    st = proc_stat(pid)
    return st is not None and st.state == "Z"


def is_alive(pid):
    """True if the process exists and is neither a zombie nor dead."""
    st = proc_stat(pid)
    return st is not None and st.state not in ("Z", "X", "x")


def read_pid(path):
    """The pid in a pidfile ("PID\\n"), or None while it is missing or
    incomplete."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    m = re.fullmatch(r"(\d+)\n", text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# CPU and memory


def cpu_seconds(pid):
    """utime + stime of `pid`, in seconds (fields 14 and 15 of its stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid, seconds):
    """The share of one core `pid` uses over the next `seconds`."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the measuring window itself, not a wait
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def proc_status(pid):
    """/proc/PID/status as {key: value text}."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def vm_kib(pid, key="VmRSS"):
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} for pid {pid}")


# ---------------------------------------------------------------------------
# File descriptors


def fd_table(pid):
    """{fd: readlink target} of /proc/PID/fd ({} if the process is gone)."""
    table = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return table
    for name in names:
        try:
            table[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except (FileNotFoundError, ProcessLookupError):
            pass
    return table


_INODE_RE = re.compile(r"^(socket|pipe):\[(\d+)\]$")


def fd_inodes(pid, kinds=("socket",), min_fd=0):
    """{fd: inode} for the fds of `pid` that are sockets (or pipes...)."""
    out = {}
    for fd, target in fd_table(pid).items():
        m = _INODE_RE.match(target)
        if m and m.group(1) in kinds and fd >= min_fd:
            out[fd] = int(m.group(2))
    return out


def socket_inodes(pid):
    return set(fd_inodes(pid).values())


# ---------------------------------------------------------------------------
# TCP sockets


TcpRow = collections.namedtuple("TcpRow", "local_port remote_port state inode")
TCP_LISTEN = "0A"
TCP_ESTABLISHED = "01"


def tcp_table():
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            rows.append(TcpRow(
                int(parts[1].rsplit(":", 1)[1], 16),
                int(parts[2].rsplit(":", 1)[1], 16),
                parts[3],
                int(parts[9]),
            ))
    return rows


def listen_inodes(port):
    """Inodes of the TCP sockets listening on `port`."""
    return {r.inode for r in tcp_table()
            if r.local_port == port and r.state == TCP_LISTEN and r.inode}


def server_side_inode(client_sock, server_port):
    """Inode of the accepted socket serving `client_sock` (0 until accepted)."""
    cport = client_sock.getsockname()[1]
    for r in tcp_table():
        if r.local_port == server_port and r.remote_port == cport and r.inode:
            return r.inode
    return 0


def server_rx_queue(port, client_sock):
    """Bytes waiting in the accepted socket of `client_sock` on 127.0.0.1
    (/proc/net/tcp's rx_queue), or None before it is accepted."""
    cport = client_sock.getsockname()[1]
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            parts = line.split()
            if (int(parts[1].rsplit(":", 1)[1], 16) == port
                    and int(parts[2].rsplit(":", 1)[1], 16) == cport):
                return int(parts[4].split(":")[1], 16)
    return None


def owner_of_socket(inode, pids):
    for pid in pids:
        if inode in socket_inodes(pid):
            return pid
    return None


# ---------------------------------------------------------------------------
# Teardown


def kill_tree(pid):
    """SIGKILL `pid` and every descendant of it, parents first (so none
    respawns what was just killed)."""
    for p in [pid] + descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_session(proc):
    """SIGKILL every process of the session that Popen `proc` leads
    (started with start_new_session=True), then reap `proc`."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in all_procs():
        if p.session == proc.pid and p.state != "Z":
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
