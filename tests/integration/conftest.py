"""The pytest fixtures and hooks of forkpool's black-box tests.

The helpers the tests share live in the package fp next to this file (its
docstring lists the modules and the rules they enforce); this file keeps
only what pytest itself looks up here: the hooks, and fixtures that start
processes and are sure to kill them in teardown.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from fp.base import FORKPOOL_BIN, FORKPOOL_CHAOS, TIMEOUT, CliResult
from fp.master import Master
from fp.net import free_port
from fp.proc import kill_session, kill_tree


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
    """Start masters: forkpool(*args, bind=True, name=..., port=None,
    worker="echo") -> Master.

    Unless bind=False, `-b 127.0.0.1:PORT` with a fresh port (or `port`)
    is put first, and the port is in master.port.  Unless the master's
    options name a worker (-k, --worker), `-k WORKER` is put first too:
    the pool-mechanics tests talk echo, while the CLI's default worker is
    http; worker=None leaves the choice to the binary.  Every master and
    all its processes are SIGKILLed in teardown.
    """
    masters = []

    def start(*args, bind=True, name=None, port=None, worker="echo"):
        args = [str(a) for a in args]
        opts = args[:args.index("--")] if "--" in args else args
        if worker is not None and not any(
                a in ("-k", "--worker") or a.startswith("--worker=") for a in opts):
            args = ["-k", worker] + args
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
        kill_tree(proc.pid)
        kill_session(proc)


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
            kill_session(proc)
            out, err = proc.communicate()
            raise AssertionError(
                f"forkpool {' '.join(map(str, args))} still running after {timeout:g} s; "
                f"stderr:\n{err.decode(errors='replace')}")
        return CliResult(proc.returncode, out.decode(errors="replace"),
                         err.decode(errors="replace"))

    yield run
    for proc in started:
        kill_session(proc)


@pytest.fixture
def sock_path():
    """A unix socket path (for --control, or -b unix:PATH) short enough
    for sun_path (pytest's tmp_path may not be), in a private directory
    removed afterwards.  The one such fixture: tests take it by name."""
    d = tempfile.mkdtemp(prefix="fpctl", dir="/tmp")
    yield os.path.join(d, "control.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rpc(forkpool):
    """A one-worker jsonrpc pool: (master, {slot: pid})."""
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pool = m.wait_pool(1)
    yield m, pool
    if m.alive():
        assert m.stop() == 0
