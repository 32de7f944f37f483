"""forkpool as PID 1 of a container: a new PID namespace made with
`unshare --pid --fork --mount-proc` (root only).

As PID 1 every orphan of the namespace is re-parented to forkpool, and a
zombie nobody reaps would stay forever: forkpool must reap them all,
grandchildren its workers left behind as well as processes that entered
the namespace from outside (`nsenter`).  SIGTERM must end the pool, and so
the namespace, cleanly: forkpool exits 0, unshare passes that on, and no
process of the namespace is left.
"""

import os
import shutil
import signal
import subprocess

import pytest

from fp.base import TIMEOUT, build_module, wait_for
from fp.logs import READY_RE
from fp.master import Master
from fp.net import free_port
from fp.proc import all_procs, proc_stat

UNSHARE = ["--pid", "--fork", "--mount-proc", "--kill-child"]


@pytest.fixture(scope="module")
def unshare():
    if os.geteuid() != 0:
        pytest.skip("a new PID namespace with its own /proc needs root")
    path = shutil.which("unshare")
    if path is None:
        pytest.skip("unshare not found (Debian package util-linux)")
    try:
        res = subprocess.run([path] + UNSHARE + ["true"], capture_output=True,
                             text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip("unshare --pid --fork --mount-proc true did not finish")
    if res.returncode != 0:
        pytest.skip(f"unshare --pid --fork --mount-proc fails here: {res.stderr.strip()}")
    return path


def pid_ns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # gone, or not ours to look at (then not in ours)


def ns_pids(pid):
    """The NSpid line of /proc/PID/status: [host pid, ..., innermost pid]."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


class Container:
    """forkpool run as PID 1 of a new PID namespace.

    `m` is the Master of the unshare process (its log is forkpool's:
    unshare execs forkpool in the forked child, which inherits stdio);
    `pid` is forkpool's pid as seen from here, `ns` its PID namespace.
    """

    def __init__(self, m):
        self.m = m
        self.pid = wait_for(self._forkpool, what=lambda: (
            f"forkpool to run under unshare pid {m.pid}\n{m.describe()}"))
        self.ns = pid_ns(self.pid)
        assert self.ns != pid_ns(os.getpid()), "forkpool is not in a new PID namespace"
        nspid = ns_pids(self.pid)
        assert nspid and nspid[-1] == 1, f"forkpool is not PID 1 of its namespace: {nspid}"

    def _forkpool(self):
        for p in all_procs():
            if p.ppid == self.m.pid and p.comm == "forkpool":
                return p.pid
        if self.m.proc.poll() is not None:
            raise AssertionError(f"unshare exited with {self.m.proc.returncode}\n"
                                 f"{self.m.describe()}")
        return None

    def wait_ready(self, n):
        """Wait until n workers said ready (their pids are the namespace's)."""
        def check():
            pids = {m.group(2) for m in READY_RE.finditer(self.m.log.text())}
            if self.m.proc.poll() is not None:
                raise AssertionError(f"unshare exited\n{self.m.describe()}")
            return len(pids) >= n
        wait_for(check, what=lambda: f"{n} ready workers\n{self.m.describe()}")

    def members(self):
        """Processes of the namespace, forkpool included, zombies too."""
        return [p for p in all_procs() if pid_ns(p.pid) == self.ns]

    def zombies(self):
        return [p for p in all_procs() if p.ppid == self.pid and p.state == "Z"]

    def find(self, pred):
        """A live member of the namespace for which pred(ProcStat)
        holds, or None."""
        for p in self.members():
            if p.state != "Z" and pred(p):
                return p
        return None

    def terminate(self):
        """SIGTERM to forkpool: it exits 0, so does unshare, and the
        namespace is empty."""
        os.kill(self.pid, signal.SIGTERM)
        status = self.m.wait_exit()
        assert status == 0, f"unshare exited with {status}\n{self.m.describe()}"
        self.m.wait_log(r"shutdown complete", need_alive=False)
        wait_for(lambda: not self.members(),
                 what=lambda: f"the namespace to be empty: {self.members()}")


class ContainerMaster(Master):
    def __init__(self, unshare, binary, args, workdir):
        super().__init__(binary, args, workdir, name="container")
        self.unshare = unshare

    def start(self):
        env = dict(os.environ, FORKPOOL_CHAOS_HOOKS=self.hooks.path)
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                    "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(var, None)
        with open(self.out.path, "wb") as out, open(self.err.path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.unshare] + UNSHARE + [self.binary] + self.args,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        return self


@pytest.fixture
def container(unshare, forkpool_bin, tmp_path):
    """container(*args) -> a Container running forkpool ARGS as PID 1.
    Killed with everything in it in teardown (--kill-child: forkpool
    dies with unshare, and the namespace with its PID 1)."""
    masters = []

    def start(*args):
        m = ContainerMaster(unshare, forkpool_bin, [str(a) for a in args], str(tmp_path))
        masters.append(m)
        m.start()
        return Container(m)

    yield start
    for m in masters:
        m.kill_all()


ORPHAN_MODULE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <forkpool.h>

/* Worker 0 leaves an orphan behind: it forks a child that forks the
 * grandchild "fp-orphan" and exits at once.  The grandchild lets go of
 * every inherited fd (the worker's pipes to the master among them),
 * lives 4 s (time for the test to find it on a busy machine) and exits:
 * as PID 1, the master must reap it. */
static int orphan_start(struct fpool_worker *w, void *arg)
{
	pid_t child;

	(void)arg;
	if (fpool_worker_id(w) != 0)
		return 0;
	child = fork();
	if (child < 0)
		return -1;
	if (child == 0) {
		if (fork() == 0) {
			int null = open("/dev/null", O_RDWR);

			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			syscall(SYS_close_range, 3, ~0U, 0);
			prctl(PR_SET_NAME, "fp-orphan");
			usleep(4000 * 1000);
			_exit(0);
		}
		_exit(0);
	}
	return waitpid(child, NULL, 0) == child ? 0 : -1;
}

static int orphan_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	while (fpool_worker_is_running(w))
		usleep(10 * 1000);
	return 0;
}

static const struct fpool_worker_def orphan = {
	.name = "orphan",
	.on_start = orphan_start,
	.main = orphan_main,
};

FPOOL_WORKER_MODULE(orphan);
"""


@pytest.fixture
def orphan_module(tmp_path):
    return build_module(tmp_path, "orphan", ORPHAN_MODULE)


def assert_adopted_then_reaped(c, orphan):
    """The orphan is forkpool's child now, and once it exits, it is
    reaped: gone, not a zombie."""
    st = proc_stat(orphan.pid)
    assert st is None or st.ppid == c.pid, (
        f"orphan {orphan.pid} was re-parented to {st.ppid}, not to forkpool {c.pid}")
    wait_for(lambda: proc_stat(orphan.pid) is None, what=lambda: (
        f"orphan {orphan.pid} to be reaped (now {proc_stat(orphan.pid)}; "
        f"zombies of forkpool: {c.zombies()})\n{c.m.describe()}"))
    assert not c.zombies(), f"zombies under forkpool: {c.zombies()}"


def test_worker_grandchild_orphan_is_reaped(container, orphan_module):
    c = container("-w", "2", "-k", orphan_module, "-b", f"127.0.0.1:{free_port()}")
    c.wait_ready(2)
    orphan = wait_for(lambda: c.find(lambda p: p.comm == "fp-orphan"),
                      what=lambda: f"the fp-orphan process\n{c.m.describe()}")
    assert_adopted_then_reaped(c, orphan)
    c.terminate()


def test_orphan_from_outside_is_reaped_and_sigterm_ends_the_namespace(container):
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        pytest.skip("nsenter not found (Debian package util-linux)")
    c = container("-w", "2", "-k", "echo", "-b", f"127.0.0.1:{free_port()}")
    c.wait_ready(2)
    # A shell entering the namespace leaves two background sleeps behind
    # and exits: both are re-parented to the namespace's PID 1.  The
    # short one exits soon and must be reaped; the long one is still
    # there at SIGTERM, and goes down with the namespace.
    res = subprocess.run(
        [nsenter, "--target", str(c.pid), "--pid", "--mount", "sh", "-c",
         "exec >/dev/null 2>&1; sleep 4 & sleep 61 & exit 0"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"nsenter failed: {res.stderr}"
    short = wait_for(lambda: c.find(lambda p: cmdline(p.pid) == b"sleep\x004\x00"),
                     what="the short sleep in the namespace")
    long = c.find(lambda p: cmdline(p.pid) == b"sleep\x0061\x00")
    assert long is not None and proc_stat(long.pid).ppid == c.pid, (
        f"the long sleep is not forkpool's child: {long and proc_stat(long.pid)}")
    assert_adopted_then_reaped(c, short)
    c.terminate()
    assert proc_stat(long.pid) is None, "the long sleep outlived its namespace"
