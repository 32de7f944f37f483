"""Master: one forkpool master started by a test, with its logs in files,
and the waits the tests do on it (a pool of N ready workers, a respawn, a
log line)."""

import collections
import os
import re
import signal
import subprocess
import time

from fp.base import POLL, TIMEOUT, shorten, wait_for
from fp.logs import READY_RE, LogFile
from fp.proc import all_procs, child_procs, proc_stat


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


def accept_runs(m, pid):
    """The acceptor's lines about runs of failures of worker `pid`, in
    order: "pause" when a run began, "resume" when it ended."""
    rx = re.compile(rf"worker 0 pid {pid}: (?:.*(pausing) accepts|"
                    rf"(accepting) on \S+ again after)")
    return ["pause" if mt.group(1) else "resume"
            for mt in map(rx.search, m.log.lines()) if mt]
