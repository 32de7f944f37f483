"""The master and its workers under valgrind's memcheck for a short
scenario: start, serve, a worker SIGKILLed and respawned, a rolling reload
(SIGHUP), a graceful stop (SIGTERM).  The master must exit 0 and every
process it ran must end with "ERROR SUMMARY: 0 errors" and no definitely
lost bytes (a leak counts as an error too: --errors-for-leak-kinds).

Workers are forked, not exec'd, so each one stays under valgrind and
writes its own vg.PID.log.  Valgrind makes every process some 20-50 times
slower, so these tests run only with FORKPOOL_VALGRIND=1: scripts/test
sets it for one extra pytest run of this file against the plain
(unsanitized) build.
"""

import glob
import http.client
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from fp.master import Master
from fp.net import echo_roundtrip, free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("FORKPOOL_VALGRIND") != "1",
    reason="slow: set FORKPOOL_VALGRIND=1 (scripts/test does) to run "
    "the master and workers under valgrind")

# Deadline for each step: valgrind's start-up alone takes seconds per
# process on a busy 2-core machine.
VG_TIMEOUT = 180.0

VALGRIND_OPTS = [
    "--trace-children=yes",
    "--child-silent-after-fork=no",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
    "--error-exitcode=99",
]


class ValgrindMaster(Master):
    """A Master whose process is valgrind running forkpool.

    valgrind execs forkpool in the process it was started as, so the pid
    is the master's and the workers are its children, as without it.
    """

    def __init__(self, binary, args, workdir, vg_dir, **kw):
        super().__init__(binary, args, workdir, **kw)
        self.vg_dir = vg_dir

    def start(self):
        cmd = (["valgrind"] + VALGRIND_OPTS
               + [f"--log-file={self.vg_dir}/vg.%p.log", self.binary] + self.args)
        with open(self.out.path, "wb") as out, open(self.err.path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        return self


@pytest.fixture
def vg_forkpool(forkpool_bin, tmp_path):
    """Start masters under valgrind: vg_forkpool(*args) -> ValgrindMaster
    (with master.port and master.vg_dir).  Killed in teardown."""
    if not shutil.which("valgrind"):
        pytest.fail("FORKPOOL_VALGRIND=1 but valgrind is not installed "
                    "(scripts/bootstrap installs it)")
    masters = []

    def start(*args):
        port = free_port()
        vg_dir = tmp_path / f"vg{len(masters)}"
        vg_dir.mkdir()
        m = ValgrindMaster(forkpool_bin, ["-b", f"127.0.0.1:{port}"] + list(args),
                           str(tmp_path), str(vg_dir),
                           name=f"forkpool{len(masters)}", port=port)
        masters.append(m)
        return m.start()

    yield start
    for m in masters:
        m.kill_all()


def builtin_workers(binary):
    """Names of the built-in workers that `forkpool --help` lists."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    return set(re.findall(r"^  ([a-z][a-z0-9_-]*)\s{2,}\S", out, re.M))


# ---------------------------------------------------------------------------
# Reading valgrind's logs

ERRORS_RE = re.compile(r"ERROR SUMMARY: ([\d,]+) errors")
DEFINITELY_RE = re.compile(r"definitely lost: ([\d,]+) bytes")


def vg_logs(vg_dir):
    """{pid: text} of every vg.PID.log."""
    logs = {}
    for path in glob.glob(os.path.join(vg_dir, "vg.*.log")):
        pid = int(re.search(r"vg\.(\d+)\.log$", path).group(1))
        with open(path, errors="replace") as f:
            logs[pid] = f.read()
    return logs


def log_problems(text, killed):
    """What is wrong with one process's valgrind log ([] if nothing).

    A SIGKILLed process never gets to print its summaries; one that has
    them must still report no error.
    """
    problems = []
    errors = ERRORS_RE.search(text)
    if errors is None:
        if not killed:
            problems.append("no ERROR SUMMARY (did the process die?)")
    elif int(errors.group(1).replace(",", "")) != 0:
        problems.append(f"ERROR SUMMARY: {errors.group(1)} errors")
    if not killed and "HEAP SUMMARY" not in text:
        problems.append("no leak summary")
    for lost in DEFINITELY_RE.findall(text):
        if int(lost.replace(",", "")) != 0:
            problems.append(f"definitely lost: {lost} bytes")
    return problems


def assert_clean(master, killed, processes):
    """Every vg.PID.log of `master` is clean; there are at least
    `processes` of them (the master's among them)."""
    logs = vg_logs(master.vg_dir)
    assert master.pid in logs, (
        f"no valgrind log of the master (pid {master.pid}) in {master.vg_dir}: "
        f"{sorted(logs)}\n{master.describe()}")
    assert len(logs) >= processes, (
        f"only {len(logs)} valgrind logs ({sorted(logs)}): a process was "
        f"not traced\n{master.describe()}")
    report = []
    for pid, text in sorted(logs.items()):
        problems = log_problems(text, pid in killed)
        if problems:
            who = "master" if pid == master.pid else "worker"
            report.append(f"=== {who} pid {pid}: {'; '.join(problems)}\n"
                          f"--- vg.{pid}.log:\n{text}")
    assert not report, (
        f"{len(report)} of {len(logs)} processes failed under valgrind:\n"
        + "\n".join(report) + f"\n{master.describe()}")


# ---------------------------------------------------------------------------
# The scenario


def http_get(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=VG_TIMEOUT)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 200, f"GET / gave {r.status}: {body!r}"
    return True


def echo(port):
    assert echo_roundtrip(("127.0.0.1", port), b"through valgrind\n", VG_TIMEOUT)


def run_scenario(start, worker, serve):
    m = start("-w", "2", "-k", worker)
    pool = m.wait_pool(2, timeout=VG_TIMEOUT)
    serve(m.port)

    # A worker SIGKILLed (after --min-uptime, so it is an ordinary exit
    # and not a failed start) is replaced in its slot.
    slot, pid = min(pool.items())
    m.wait_uptime(pid, 1.5)
    os.kill(pid, signal.SIGKILL)
    m.wait_respawn(slot, pid, timeout=VG_TIMEOUT)
    m.wait_pool(2, timeout=VG_TIMEOUT)
    serve(m.port)

    # Rolling reload: each worker replaced, the old ones drain and exit.
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload complete", timeout=VG_TIMEOUT)
    m.wait_pool(2, timeout=VG_TIMEOUT)
    serve(m.port)

    status = m.stop(timeout=VG_TIMEOUT)
    assert status == 0, (
        f"master exited with {status} (valgrind's --error-exitcode is 99)\n"
        f"{m.describe()}")
    # The master, two workers, a respawn and two reload replacements.
    assert_clean(m, killed={pid}, processes=6)


def test_echo_under_valgrind(vg_forkpool):
    run_scenario(vg_forkpool, "echo", echo)


def test_http_under_valgrind(vg_forkpool, forkpool_bin):
    if "http" not in builtin_workers(forkpool_bin):
        pytest.skip("this forkpool has no built-in http worker")
    run_scenario(vg_forkpool, "http", http_get)


def test_stuck_sinks_and_control_clients_under_valgrind(vg_forkpool, chaos, tmp_path):
    """The master's non-blocking paths under memcheck: worker output to a
    FIFO nobody reads for a while (queue, back-pressure, given up, drops,
    the dropped report once it is read), the control socket with
    pipelined requests and a half-close, `output` of cut long lines, a
    SIGUSR1 reopen and a stop whose client hangs up unread."""
    import json
    import socket
    import threading

    fifo = str(tmp_path / "out.fifo")
    sock = str(tmp_path / "c.sock")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    m = vg_forkpool("-w", "2", "--control", sock, "--stdout", fifo, "-k", chaos, "--",
                    "--lines", "300:3000", "--esay", "done")
    # Reading the FIFO as a log file (describe()) would wait for a writer.
    m.worker_files = [f for f in m.worker_files if f.path != fifo]
    try:
        m.wait_pool(2, timeout=VG_TIMEOUT)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(VG_TIMEOUT)
        s.connect(sock)
        s.sendall(b'{"id":"1","cmd":"status"}\n{"id":"2","cmd":"output","worker":0,'
                  b'"lines":1000}\n{"id":"3","cmd":"status"}\n')
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        assert [json.loads(l)["id"] for l in data.splitlines()] == ["1", "2", "3"], data[:300]

        # The reader reads nothing until the master gave up on it, and
        # both workers have written all their lines (1.8 MB, more than the
        # queue holds): their stderr line "done" (to the log) comes last.
        m.wait_log(r"worker stdout file \S+ took nothing for 1 s", timeout=VG_TIMEOUT)
        m.wait_log(r"\] done$", count=2, timeout=VG_TIMEOUT)
        got = bytearray()
        done = threading.Event()

        def drain():
            os.set_blocking(reader, True)
            while not done.is_set():
                chunk = os.read(reader, 65536)
                if not chunk:
                    return
                got.extend(chunk)
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        deadline = time.monotonic() + VG_TIMEOUT
        while b"were dropped" not in got and time.monotonic() < deadline:
            time.sleep(0.2)
        assert re.search(rb"\d+ records to worker stdout file \S+ were dropped", got), got[-500:]
        m.signal(signal.SIGUSR1)
        m.wait_log(r"SIGUSR1: log files reopened", timeout=VG_TIMEOUT)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        s.sendall(b'{"id":"4","cmd":"stop"}\n')
        s.close()
        assert m.wait_exit(timeout=VG_TIMEOUT) == 0, m.describe()
        done.set()
    finally:
        os.close(reader)
    assert_clean(m, killed=set(), processes=3)
