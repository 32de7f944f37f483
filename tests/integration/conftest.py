"""Helpers shared by forkpool's black-box tests.

The tests drive the real binary named by $FORKPOOL_BIN (meson sets it, and
$FORKPOOL_CHAOS, the test-only chaos worker module).  Everything here uses
the Python standard library, /proc and 127.0.0.1 only.

Rules these helpers enforce:
- nothing sleeps for a fixed time where a condition can be polled: wait_for()
  polls every 10 ms up to a generous deadline (the suite must hold on a busy
  2-core machine, yet finish fast when things work);
- ports are picked at run time (bind 127.0.0.1:0, read it, close it);
- every process a test starts runs in its own session and is SIGKILLed in
  teardown together with every process of that session and every
  descendant found through /proc, whatever the test's outcome.
"""

import collections
import datetime
import errno
import http.client
import json
import os
import pathlib
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
FORKPOOL_BIN = os.environ.get("FORKPOOL_BIN")
FORKPOOL_CHAOS = os.environ.get("FORKPOOL_CHAOS")

# Deadline for anything that should happen "soon": long enough for a loaded
# 2-core machine, short enough that a real hang fails in reasonable time.
TIMEOUT = 20.0
POLL = 0.01

LOG_LINE_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) "
    r"(?P<level>debug|info|warning|error) "
    r"(?P<origin>master|worker \d+ pid \d+): "
    r"(?P<msg>.+)$"
)
READY_RE = re.compile(r"\bworker (\d+) pid (\d+) ready\b")
# A worker's stdout/stderr line as the master re-emits it in text format.
OUTPUT_LINE_RE = re.compile(r"^\[worker (?P<id>\d+) pid (?P<pid>\d+)\] (?P<line>.*)$", re.S)
JSON_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
JSON_LEVELS = ("debug", "info", "warning", "error")


def pytest_collection_modifyitems(config, items):
    if FORKPOOL_BIN:
        return
    skip = pytest.mark.skip(
        reason="FORKPOOL_BIN is not set: run these through `meson test -C build "
        "--suite integration`, or set FORKPOOL_BIN=build/cli/forkpool "
        "(and FORKPOOL_CHAOS=build/tests/workers/chaos.so)"
    )
    for item in items:
        item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # Without the binary nothing ran: say "skipped" the way meson (and
    # automake) understand it, rather than "passed".
    if not FORKPOOL_BIN and exitstatus == 0:
        session.exitstatus = 77


# ---------------------------------------------------------------------------
# Waiting


def wait_for(pred, timeout=TIMEOUT, interval=POLL, what=None):
    """Poll pred() until it returns something truthy and return that value.

    Raises AssertionError after `timeout` seconds.  `what` describes the
    condition in the failure message; it may be a callable returning text
    (evaluated only on failure, e.g. to append a log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else (what or getattr(pred, "__name__", "condition"))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {desc}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# /proc


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


def is_zombie(pid):
    st = proc_stat(pid)
    return st is not None and st.state == "Z"


def is_alive(pid):
    """True if the process exists and is neither a zombie nor dead."""
    st = proc_stat(pid)
    return st is not None and st.state not in ("Z", "X", "x")


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


def owner_of_socket(inode, pids):
    for pid in pids:
        if inode in socket_inodes(pid):
            return pid
    return None


# ---------------------------------------------------------------------------
# Sockets


_ports_given = set()
_port_rng = random.Random()


def _ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Drawn below the kernel's ephemeral range, so that no connect() or
    bind(("", 0)) anywhere (the tests' own load clients open thousands of
    connections) can take it before the master binds it, and never the
    same port twice in one run.
    """
    low = _ephemeral_low()
    for _ in range(200 if low > 11000 else 0):
        port = _port_rng.randrange(10000, low)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    """True if a fresh listener can take the port.

    SO_REUSEADDR only tolerates TIME_WAIT leftovers; no SO_REUSEPORT, so any
    socket still bound or listening there (an orphan worker's listener, say)
    makes this fail.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


class Conn:
    """A client connection (self.sock, unread bytes in self.buf), closed
    when a with block ends."""

    sock = None
    buf = b""

    def wait_eof(self):
        """Wait for a clean close: EOF with nothing more sent.  A reset
        raises ConnectionResetError."""
        assert not self.buf, f"unexpected bytes after the last reply: {self.buf[:200]!r}"
        data = self.sock.recv(65536)
        assert data == b"", f"unexpected bytes instead of EOF: {data[:200]!r}"

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EchoClient(Conn):
    """One connection to an echo server; address is (host, port) or a path."""

    def __init__(self, address, timeout=TIMEOUT):
        if isinstance(address, str):
            family = socket.AF_UNIX
        elif ":" in address[0]:
            family = socket.AF_INET6
        else:
            family = socket.AF_INET
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def echo(self, data, timeout=TIMEOUT):
        """Send `data` while reading; return what came back (must be all)."""
        got = bytearray()
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while len(got) < len(data):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"echo timed out: sent {len(data) - len(view)} of {len(data)} "
                        f"bytes, got {len(got)} back")
                for _key, mask in sel.select(min(left, 0.5)):
                    if mask & selectors.EVENT_READ:
                        chunk = self.sock.recv(65536)
                        if not chunk:
                            raise ConnectionError(
                                f"connection closed after {len(got)} of {len(data)} bytes")
                        got += chunk
                    if mask & selectors.EVENT_WRITE and len(view):
                        n = self.sock.send(view[:65536])
                        view = view[n:]
                        if not len(view):
                            sel.modify(self.sock, selectors.EVENT_READ)
        assert bytes(got) == bytes(data), "echo returned different bytes"
        return bytes(got)

    def is_closed_by_peer(self):
        """True if the server closed or reset the connection (non-blocking)."""
        try:
            return self.sock.recv(65536) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def wait_closed(self, timeout=TIMEOUT):
        wait_for(self.is_closed_by_peer, timeout, what="the server to close the connection")


def control_replies(path, *reqs, timeout=TIMEOUT):
    """Send request objects to the control socket at path (each given an
    id; all in one write) on one connection; return their replies, each
    checked to echo its id."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        reqs = [dict(id=os.urandom(4).hex(), **r) for r in reqs]
        s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
        buf = b""
        deadline = time.monotonic() + timeout
        while buf.count(b"\n") < len(reqs):
            assert time.monotonic() < deadline, f"no reply to {reqs} (have {buf!r})"
            chunk = s.recv(65536)
            assert chunk, f"connection closed before the replies to {reqs} (have {buf!r})"
            buf += chunk
        # Hang up, and wait for the master to hang up too: once this
        # returns the master holds no fd for the connection, so a test
        # counting the master's fds never sees one still closing.
        s.shutdown(socket.SHUT_WR)
        while True:
            assert time.monotonic() < deadline, f"the master kept the connection (have {buf!r})"
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    assert buf.count(b"\n") == len(reqs) and buf.endswith(b"\n"), (
        f"{len(reqs)} replies expected, got {buf!r}")
    reps = [json.loads(line) for line in buf.split(b"\n")[:len(reqs)]]
    for req, rep in zip(reqs, reps):
        assert rep["id"] == req["id"], (req, rep)
    return reps


def control(path, req, timeout=TIMEOUT):
    """One request on a fresh connection to the control socket; its reply."""
    rep, = control_replies(path, req, timeout=timeout)
    return rep


def control_status(path, timeout=TIMEOUT):
    """The result of a "status" request, which must succeed."""
    rep = control(path, {"cmd": "status"}, timeout)
    assert rep["ok"] is True, rep
    return rep["result"]


@pytest.fixture
def sock_path():
    """A control socket path short enough for sun_path (pytest's tmp_path
    may not be), in a private directory removed afterwards."""
    d = tempfile.mkdtemp(prefix="fpctl", dir="/tmp")
    yield os.path.join(d, "control.sock")
    shutil.rmtree(d, ignore_errors=True)


def report(capsys, text):
    """Print figures an issue asks for, visible even when pytest captures
    output (a plain `pytest -v` run)."""
    with capsys.disabled():
        print("\n    " + text.replace("\n", "\n    "))


def build_module(tmp_path, name, source):
    """Compile a worker module from C source into tmp_path/NAME.so, with
    the project's warnings as errors; its path.  Skips without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    (tmp_path / f"{name}.c").write_text(source)
    res = subprocess.run(
        [cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         f"-I{REPO / 'include'}", "-o", f"{name}.so", f"{name}.c"],
        cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, f"compiling the {name} worker failed:\n{res.stderr}"
    return str(tmp_path / f"{name}.so")


def echo_roundtrip(address, payload=b"hello forkpool\n", timeout=TIMEOUT):
    with EchoClient(address, timeout) as c:
        return c.echo(payload, timeout) == payload


def not_served(address, wait=0.5):
    """True if a new connection to `address` gets no echo within `wait` s.

    Refused, reset, closed or silent all count as "not served".  This is
    the one place a test must watch for something *not* happening, so it
    needs a window; keep it short.
    """
    try:
        c = EchoClient(address, timeout=wait)
    except (ConnectionRefusedError, ConnectionResetError, socket.timeout, FileNotFoundError):
        return True
    with c:
        try:
            c.sock.send(b"ping")
        except (BrokenPipeError, ConnectionResetError):
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                time.sleep(POLL)
                continue
            except ConnectionResetError:
                return True
            return data == b""
        return True


# ---------------------------------------------------------------------------
# JSON logs (--log-format json)


def parse_json_line(raw, where="line"):
    """One line of a --log-format json file (bytes, no newline) -> dict.

    Strict: the bytes must be valid UTF-8 and one JSON object with the
    keys every record has (time, level, origin, pid, msg) of the right
    types; worker lines carry "worker", captured lines "stream", and
    "fields" is an object of strings.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError(f"{where} is not valid UTF-8 ({e}): {raw!r}") from None
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise AssertionError(f"{where} is not JSON ({e}): {raw!r}") from None
    assert isinstance(rec, dict), f"{where} is not a JSON object: {raw!r}"
    problems = []
    if not (isinstance(rec.get("time"), str) and JSON_TIME_RE.match(rec["time"])):
        problems.append("time")
    if rec.get("level") not in JSON_LEVELS:
        problems.append("level")
    if rec.get("origin") not in ("master", "worker"):
        problems.append("origin")
    if not isinstance(rec.get("pid"), int) or isinstance(rec.get("pid"), bool):
        problems.append("pid")
    if not isinstance(rec.get("msg"), str):
        problems.append("msg")
    if rec.get("origin") == "worker" and (
            not isinstance(rec.get("worker"), int) or isinstance(rec.get("worker"), bool)):
        problems.append("worker")
    if "stream" in rec and rec["stream"] not in ("stdout", "stderr"):
        problems.append("stream")
    if "fields" in rec and not (isinstance(rec["fields"], dict) and
                                all(isinstance(v, str) for v in rec["fields"].values())):
        problems.append("fields")
    assert not problems, f"{where}: bad or missing {', '.join(problems)}: {raw!r}"
    return rec


class Tail:
    """A file another process appends to, read incrementally: only
    complete lines are handed out, so nothing sees half a line."""

    def __init__(self, path):
        self.path = str(path)
        self._pos = 0
        self._pending = b""

    def new_lines(self):
        """The complete lines appended since the last call, as bytes that
        end with a newline (b"" if none, or no file yet)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                new = f.read()
        except FileNotFoundError:
            return b""
        self._pos += len(new)
        data = self._pending + new
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return data[:cut]


class JsonLog(Tail):
    """A --log-format json file another process appends to, parsed
    incrementally and strictly (parse_json_line) as complete lines arrive.

    Records are kept in .records, or handed to on_record(rec) instead (a
    flood of records need not sit in memory).
    """

    def __init__(self, path, on_record=None):
        super().__init__(path)
        self.on_record = on_record
        self.records = []
        self.count = 0

    def read(self):
        data = self.new_lines()
        if data:
            for raw in data[:-1].split(b"\n"):
                self.count += 1
                rec = parse_json_line(raw, f"{os.path.basename(self.path)} line {self.count}")
                if self.on_record:
                    self.on_record(rec)
                else:
                    self.records.append(rec)
        return self.records


def read_json_log(path):
    """Every line of a finished --log-format json file, parsed strictly.

    The file must end with a newline (no half-written last line).
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return []
    assert data.endswith(b"\n"), f"{path} does not end with a newline: {data[-200:]!r}"
    return [parse_json_line(raw, f"{os.path.basename(path)} line {n}")
            for n, raw in enumerate(data[:-1].split(b"\n"), 1)]


# ---------------------------------------------------------------------------
# The master process


def shorten(text, width=300):
    """`text`, or its start and end around a note of how much was cut."""
    if len(text) <= width:
        return text
    keep = width // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep} more]...{text[-keep:]}"


class LogFile(Tail):
    """A file another process appends to, read incrementally.

    Only complete lines are exposed, so a regex never matches half a line.
    """

    def __init__(self, path):
        super().__init__(path)
        self._text = ""

    def text(self):
        self._text += self.new_lines().decode(errors="replace")
        return self._text

    def lines(self):
        # Only "\n" ends a line: str.splitlines() would also cut at \r,
        # \v, \f, \x1c..\x1e and \x85, which a worker may print.
        text = self.text()
        return text[:-1].split("\n") if text else []

    def tail(self, n=40, width=300):
        """The last n lines, each cut to `width` characters, for messages."""
        return "\n".join(shorten(l, width) for l in self.lines()[-n:])


def log_time(line):
    """The timestamp of a master log line, as seconds (float)."""
    m = LOG_LINE_RE.match(line)
    assert m, f"not a log line: {line!r}"
    dt = datetime.datetime.strptime(m.group("ts"), "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def option_value(args, flag):
    """The value of the master option `flag` ("--log-file") in `args`, or
    None.  Both "--flag VALUE" and "--flag=VALUE" count; the worker's
    arguments (after "--") do not."""
    value = None
    args = [str(a) for a in args]
    for i, a in enumerate(args):
        if a == "--":
            break
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1:]
    return value


class Master:
    """One forkpool master started by a test, with its logs in files.

    The master's log is read from its stderr, or from the --log-file given
    in `args`; worker output captured with --stdout/--stderr FILE is read
    from those files too (see output_lines()).
    """

    def __init__(self, binary, args, workdir, name="forkpool", port=None):
        self.binary = binary
        self.args = [str(a) for a in args]
        self.port = port
        self.out = LogFile(os.path.join(workdir, f"{name}.stdout"))
        self.err = LogFile(os.path.join(workdir, f"{name}.stderr"))
        # The chaos worker's hook lines, also appended here (see find()).
        self.hooks = LogFile(os.path.join(workdir, f"{name}.hooks"))
        log_file = option_value(self.args, "--log-file")
        self.log = LogFile(log_file) if log_file else self.err
        self.worker_files = []   # LogFiles of --stdout / --stderr, if given
        for flag in ("--stdout", "--stderr"):
            path = option_value(self.args, flag)
            if path is not None:
                if path not in [f.path for f in [self.log] + self.worker_files]:
                    self.worker_files.append(LogFile(path))
        self.proc = None
        self.pid = None
        self.ready_seen = {}   # pid -> time.monotonic() when its ready line was read
        self._ready = {}       # slot id -> newest ready pid
        self._ready_pos = 0

    # -- process control --

    def start(self):
        with open(self.out.path, "wb") as out, open(self.err.path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.binary] + self.args,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=dict(os.environ, FORKPOOL_CHAOS_HOOKS=self.hooks.path),
                start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        return self

    def signal(self, sig):
        os.kill(self.pid, sig)

    def alive(self):
        """Running, and neither stopped (SIGTTIN's default!) nor a zombie."""
        if self.proc.poll() is not None:
            return False
        st = proc_stat(self.pid)
        return st is not None and st.state not in ("Z", "X", "T", "t")

    def wait_exit(self, timeout=TIMEOUT):
        """Wait for the master to exit and return its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"master pid {self.pid} still running after {timeout:g} s\n{self.describe()}")

    def stop(self, sig=None, timeout=TIMEOUT):
        """Signal the master (SIGTERM by default) and return its exit status."""
        self.signal(signal.SIGTERM if sig is None else sig)
        return self.wait_exit(timeout)

    def tree(self, include_zombies=False):
        """Processes of the master's session plus all its descendants.

        The session catches workers that were orphaned (re-parented to
        init) after the master died; descendants catch anything that
        called setsid().
        """
        procs = all_procs()
        by_parent = collections.defaultdict(list)
        for p in procs:
            by_parent[p.ppid].append(p)
        found = {p.pid: p for p in procs if p.session == self.pid}
        stack = [self.pid]
        while stack:
            for child in by_parent.get(stack.pop(), ()):
                if child.pid not in found:
                    found[child.pid] = child
                    stack.append(child.pid)
        found.pop(self.pid, None)
        return [p for p in found.values() if include_zombies or p.state != "Z"]

    def kill_all(self):
        """SIGKILL the master first (so it stops respawning), then the rest."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rest = [p for p in self.tree() if p.state != "Z"]
            if not rest:
                break
            for p in rest:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(POLL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    # -- logs --

    def describe(self):
        text = (f"--- master args: {shorten(' '.join(shorten(a, 80) for a in self.args), 1000)}\n"
                f"--- stderr (tail):\n{self.err.tail()}\n"
                f"--- stdout (tail):\n{self.out.tail()}")
        for f in ([self.log] if self.log is not self.err else []) + self.worker_files:
            text += f"\n--- {os.path.basename(f.path)} (tail):\n{f.tail()}"
        if self.proc is not None and self.proc.poll() is not None:
            text += f"\n--- chaos hook lines (tail):\n{self.hooks.tail()}"
        return text

    def switch_log(self, path):
        """Read the master's log from `path` from now on (after a rename
        and SIGUSR1, the new file at the old path).  ready_workers() keeps
        what it learnt so far and reads the new file from its start."""
        self.log = LogFile(path)
        self._ready_pos = 0
        return self.log

    def output_lines(self):
        """Lines the workers printed, wherever they land.

        The master captures worker stdout/stderr and writes the lines,
        tagged "[worker ID pid PID] ", to its log (stderr or --log-file),
        or to the --stdout/--stderr files.  Its own stdout is searched as
        well, where workers wrote before output was captured.  The lines of
        one worker's stream stay in order: they all land in one file.
        """
        files = [self.out, self.err]
        if self.log is not self.err:
            files.append(self.log)
        lines = []
        for f in files + self.worker_files:
            lines += f.lines()
        return lines

    def find(self, regex, stream="err"):
        """Every match of `regex` in the master's log (stream="err": its
        stderr or --log-file) or in the workers' output (stream="out", see
        output_lines()).

        Once the master has exited, nobody reads the workers' pipes: what
        an orphan prints after a SIGKILLed master is lost.  So for
        stream="out" with the master gone and no match in the captured
        output, the chaos worker's hook lines are searched instead (chaos
        appends each to $FORKPOOL_CHAOS_HOOKS as well).  While the master
        runs only captured output counts, so the tests that check capture,
        or the order of lines within output_lines(), see nothing else.
        """
        lines = self.log.lines() if stream == "err" else self.output_lines()
        rx = re.compile(regex)
        found = [m for m in map(rx.search, lines) if m]
        if (not found and stream != "err" and self.proc is not None
                and self.proc.poll() is not None):
            found = [m for m in map(rx.search, self.hooks.lines()) if m]
        return found

    def wait_log(self, regex, timeout=TIMEOUT, stream="err", count=1, need_alive=True):
        """Wait until `regex` matched `count` lines; return the last match.

        The match's `.string` is the whole line.  With need_alive, a
        master that exits without printing it fails at once.
        """
        def check():
            found = self.find(regex, stream)
            if len(found) >= count:
                return found[count - 1]
            if need_alive and self.proc.poll() is not None:
                found = self.find(regex, stream)  # a last look after exit
                if len(found) >= count:
                    return found[count - 1]
                raise AssertionError(
                    f"master exited with {self.proc.returncode} before logging "
                    f"{regex!r}\n{self.describe()}")
            return None
        return wait_for(check, timeout,
                        what=lambda: f"{regex!r} in {stream}\n{self.describe()}")

    def wait_out(self, regex, timeout=TIMEOUT, **kw):
        return self.wait_log(regex, timeout, stream="out", **kw)

    def ready_workers(self):
        """{slot id: pid} from the newest "worker ID pid PID ready" line per id."""
        text = self.log.text()
        for m in READY_RE.finditer(text, self._ready_pos):
            slot, pid = int(m.group(1)), int(m.group(2))
            self._ready[slot] = pid
            self.ready_seen.setdefault(pid, time.monotonic())
        # Only complete lines are in `text`, so the next scan starts there.
        self._ready_pos = len(text)
        return dict(self._ready)

    # -- workers --

    def children(self):
        """Live (non-zombie) child pids of the master."""
        return {p.pid for p in child_procs(self.pid) if p.state != "Z"}

    def wait_new_child(self, known, timeout=TIMEOUT):
        """Return a live child of the master not in `known`, as soon as it exists.

        For signal storms on newborn workers, so it is fast: it first looks
        at the pids just above the newest known one (pids are handed out in
        order), and only every few rounds scans all of /proc.  It spins
        without sleeping for the first 50 ms, when the child is expected.
        """
        start = time.monotonic()
        base = max(known) if known else self.pid
        rounds = 0
        while True:
            for pid in range(base + 1, base + 33):
                st = proc_stat(pid)
                if st is not None and st.ppid == self.pid and st.state != "Z" and pid not in known:
                    return pid
            rounds += 1
            if rounds % 16 == 0:
                fresh = self.children() - set(known)
                if fresh:
                    return min(fresh)
                if self.proc.poll() is not None:
                    raise AssertionError(f"master exited\n{self.describe()}")
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise AssertionError(f"no new worker within {timeout:g} s\n{self.describe()}")
            if elapsed > 0.05:
                time.sleep(0.001)

    def zombies(self):
        return {p.pid for p in child_procs(self.pid) if p.state == "Z"}

    def pool_state(self, n):
        """{slot: pid} if exactly n live children exist and all said ready."""
        kids = self.children()
        ready = {s: p for s, p in self.ready_workers().items() if p in kids}
        if len(kids) == n and len(ready) == n:
            return ready
        return None

    def wait_pool(self, n, timeout=TIMEOUT):
        """Wait until the pool is exactly n ready, live workers; return them."""
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"master exited with {self.proc.returncode}\n{self.describe()}")
            return self.pool_state(n)
        return wait_for(check, timeout, what=lambda: (
            f"a pool of exactly {n} ready workers (children now "
            f"{sorted(self.children())}, ready {self.ready_workers()})\n{self.describe()}"))

    def wait_respawn(self, slot, old_pid, timeout=TIMEOUT, require_alive=True):
        """Wait for a ready worker in `slot` with a pid other than old_pid."""
        def check():
            pid = self.ready_workers().get(slot)
            if pid is None or pid == old_pid:
                return None
            if require_alive and pid not in self.children():
                return None
            return pid
        return wait_for(check, timeout, what=lambda: (
            f"a new ready worker in slot {slot} (old pid {old_pid})\n{self.describe()}"))

    def wait_uptime(self, pid, seconds):
        """Make sure `pid` has been ready for at least `seconds`.

        Used only to outlive --min-uptime, so that a kill counts as an
        ordinary exit and not as a failed start (which would be backed
        off): the tests then measure respawn, not the restart policy.
        """
        self.ready_workers()
        seen = self.ready_seen.get(pid, time.monotonic())
        left = seen + seconds - time.monotonic()
        if left > 0:
            time.sleep(left)

    def wait_no_zombies(self, timeout=TIMEOUT):
        wait_for(lambda: not self.zombies(), timeout,
                 what=lambda: f"no zombie children (zombies: {sorted(self.zombies())})")

    def assert_tree_gone(self):
        left = self.tree()
        assert not left, (
            "processes of the master's tree are still running: "
            + ", ".join(f"{p.pid} ({p.comm}, state {p.state})" for p in left)
            + "\n" + self.describe())


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def forkpool_bin():
    if not FORKPOOL_BIN:
        pytest.skip("FORKPOOL_BIN is not set")
    if not os.access(FORKPOOL_BIN, os.X_OK):
        pytest.fail(f"FORKPOOL_BIN={FORKPOOL_BIN} is not an executable file")
    return FORKPOOL_BIN


@pytest.fixture
def chaos():
    """Path of the chaos worker module (tests/workers/chaos.c)."""
    if not FORKPOOL_CHAOS:
        pytest.skip("FORKPOOL_CHAOS is not set (path of the chaos worker module)")
    if not os.path.isfile(FORKPOOL_CHAOS):
        pytest.fail(f"FORKPOOL_CHAOS={FORKPOOL_CHAOS} does not exist")
    return FORKPOOL_CHAOS


@pytest.fixture
def forkpool(forkpool_bin, tmp_path):
    """Start masters: forkpool(*args, bind=True, name=...) -> Master.

    Unless bind=False, `-b 127.0.0.1:PORT` with a fresh port is put first,
    and the port is in master.port.  Every master and all its processes are
    SIGKILLed in teardown.
    """
    masters = []

    def start(*args, bind=True, name=None, port=None):
        args = [str(a) for a in args]
        opts = args[:args.index("--")] if "--" in args else args
        if not any(a in ("-k", "--worker") or a.startswith("--worker=")
                   for a in opts):
            # The pool-mechanics tests talk echo; the CLI's default
            # worker is http.
            args = ["-k", "echo"] + args
        if bind:
            port = port or free_port()
            args = ["-b", f"127.0.0.1:{port}"] + args
        m = Master(forkpool_bin, args, str(tmp_path),
                   name=name or f"forkpool{len(masters)}", port=port)
        masters.append(m)
        return m.start()

    yield start
    for m in masters:
        m.kill_all()


CliResult = collections.namedtuple("CliResult", "returncode stdout stderr")


def names_flag(line, flag):
    """`flag` appears as a whole option name (--worker is not --workers)."""
    return re.search(re.escape(flag) + r"(?![\w-])", line) is not None


def assert_one_line_error(res, flag, status=2):
    """A CliResult that failed with `status` (any non-zero if None) and
    said so in one stderr line naming `flag`."""
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    if status is None:
        assert res.returncode != 0, f"exit status 0, expected a failure; stderr:\n{res.stderr}"
    else:
        assert res.returncode == status, (
            f"exit status {res.returncode}, expected {status}; stderr:\n{res.stderr}")
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    assert names_flag(lines[0], flag), f"the error does not name {flag}: {lines[0]!r}"


@pytest.fixture
def spawn(forkpool_bin):
    """Start forkpool with stdio and a preexec of the test's choosing:
    spawn(*args, stdin=, stdout=, stderr=, preexec_fn=, session=True) ->
    Popen.  For what the Master fixture cannot set up (a pipe nobody
    reads, a terminal, resource limits).  Unless session=False the process
    starts a session of its own (a preexec_fn that wants a terminal calls
    setsid itself).  Every process of its session and its descendants is
    SIGKILLed in teardown."""
    started = []

    def start(*args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL, preexec_fn=None, session=True, env=None):
        proc = subprocess.Popen(
            [forkpool_bin] + [str(a) for a in args], stdin=stdin, stdout=stdout,
            stderr=stderr, preexec_fn=preexec_fn, start_new_session=session,
            close_fds=True, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        descendants = [proc.pid]
        by_parent = collections.defaultdict(list)
        for p in all_procs():
            by_parent[p.ppid].append(p.pid)
        i = 0
        while i < len(descendants):
            descendants += by_parent.get(descendants[i], [])
            i += 1
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_session(proc)


@pytest.fixture
def run_cli(forkpool_bin):
    """Run forkpool to completion: run_cli(*args, timeout=20) -> CliResult.

    A binary that wrongly starts serving instead of failing is killed (with
    its whole session) at the timeout and the test fails.
    """
    started = []

    def run(*args, timeout=TIMEOUT):
        proc = subprocess.Popen(
            [forkpool_bin] + [str(a) for a in args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, close_fds=True)
        started.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            out, err = proc.communicate()
            raise AssertionError(
                f"forkpool {' '.join(map(str, args))} still running after {timeout:g} s; "
                f"stderr:\n{err.decode(errors='replace')}")
        return CliResult(proc.returncode, out.decode(errors="replace"),
                         err.decode(errors="replace"))

    yield run
    for proc in started:
        _kill_session(proc)


def _kill_session(proc):
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


def assert_serves_alone(master, pid, connections=2):
    """Prove that worker `pid` itself accepts and echoes.

    Echo does not say who answered, so every other worker is stopped
    (SIGSTOP) for a moment: only `pid` can accept from the shared
    listener, and /proc says which process holds the accepted socket.
    """
    workers = master.children()
    assert pid in workers, f"pid {pid} is not a live worker"
    others = [p for p in workers if p != pid]
    for p in others:
        os.kill(p, signal.SIGSTOP)
    try:
        for i in range(connections):
            with EchoClient(("127.0.0.1", master.port)) as c:
                c.echo(f"to pid {pid}, #{i}\n".encode())
                inode = wait_for(lambda: server_side_inode(c.sock, master.port),
                                 what="the accepted socket in /proc/net/tcp")
                owner = owner_of_socket(inode, workers)
                assert owner == pid, f"connection served by {owner}, not by {pid}"
    finally:
        for p in others:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass


class HttpLoad:
    """HTTP clients on 127.0.0.1:port, each sending `GET /` back to back:
    `keepalive` clients on kept-alive connections (told `Connection:
    close`, one reconnects with its next request: that is no failure) and
    `fresh` clients opening a new connection per request.

    run(seconds, at=[(t, fn)]) sends for `seconds`, calling each fn(), in
    this thread, t seconds after the start; stop(), from such an fn, ends
    the load early (stopped_after: seconds from the start to stop()), so
    it can last until something happened.  Afterwards: failures (client,
    what), counts per kind, served_by {pid: requests} (from X-Pid), closes
    {keep-alive client: Connection: close seen}, wall0 (time.time() at the
    start).  A response counts only if it is a 200 with a numeric X-Pid
    and, when `body_prefix` is given, a body starting with it.
    """

    def __init__(self, port, keepalive=16, fresh=8, body_prefix=None):
        self.port = port
        self.nkeepalive = keepalive
        self.nfresh = fresh
        self.body_prefix = body_prefix
        self.lock = threading.Lock()
        self.failures = []
        self.served_by = {}
        self.counts = {"keepalive": 0, "fresh": 0}
        self.closes = {}
        self.wall0 = None
        self._go = threading.Event()
        self._end = None
        self.stopped_after = None

    def stop(self):
        """Let every client finish its request in flight and send no more."""
        if self.stopped_after is None:
            self.stopped_after = time.time() - self.wall0
        # The clients check this deadline before each request.
        self._end = time.monotonic()

    def total(self):
        return self.counts["keepalive"] + self.counts["fresh"]

    def summary(self):
        return (f"{self.total()} requests ({self.counts}), by pid {self.served_by}, "
                f"Connection: close per keep-alive client {sorted(self.closes.values())}")

    def _fail(self, name, what):
        with self.lock:
            self.failures.append((name, what))

    def _record(self, name, kind, resp, body):
        pid = resp.getheader("X-Pid")
        if resp.status != 200:
            self._fail(name, f"status {resp.status} {resp.reason} {body[:100]!r}")
            return False
        if (pid is None or not pid.isdigit()
                or (self.body_prefix is not None and not body.startswith(self.body_prefix))):
            self._fail(name, f"bad response: X-Pid {pid!r} body {body[:100]!r}")
            return False
        with self.lock:
            self.counts[kind] += 1
            self.served_by[int(pid)] = self.served_by.get(int(pid), 0) + 1
        return True

    def _keepalive(self, i):
        name = f"keep-alive client {i}"
        self.closes[name] = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        self._go.wait()
        try:
            while time.monotonic() < self._end:
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read()
                except Exception as e:
                    self._fail(name, repr(e))
                    conn.close()
                    continue
                if self._record(name, "keepalive", resp, body) and resp.will_close:
                    # Told to go: the next request opens a new connection.
                    self.closes[name] += 1
                    conn.close()
        finally:
            conn.close()

    def _fresh(self, i):
        name = f"new-connection client {i}"
        self._go.wait()
        while time.monotonic() < self._end:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
            except Exception as e:
                self._fail(name, repr(e))
                continue
            finally:
                conn.close()
            self._record(name, "fresh", resp, body)

    def run(self, seconds, at=()):
        threads = [threading.Thread(target=self._keepalive, args=(i,), daemon=True)
                   for i in range(self.nkeepalive)]
        threads += [threading.Thread(target=self._fresh, args=(i,), daemon=True)
                    for i in range(self.nfresh)]
        for t in threads:
            t.start()
        self.wall0 = time.time()
        t0 = time.monotonic()
        self._end = t0 + seconds
        self._go.set()
        for when, fn in at:
            # Pacing the actions within the load window, not a wait for
            # a condition.
            time.sleep(max(0.0, t0 + when - time.monotonic()))
            fn()
        for t in threads:
            t.join(seconds + TIMEOUT * 2)
        assert not any(t.is_alive() for t in threads), "some clients never finished"
        return self


def build_sanitizers(forkpool_bin):
    """The -Db_sanitize of the build FORKPOOL_BIN comes from ("" if none),
    read from meson's introspection files."""
    info = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(forkpool_bin))),
                        "meson-info", "intro-buildoptions.json")
    try:
        with open(info) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        return ""
    for o in opts:
        if o.get("name") == "b_sanitize":
            return "" if o.get("value") in (None, "none") else str(o["value"])
    return ""
