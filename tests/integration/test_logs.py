"""Log records: a worker's fpool_log()/fpool_log_fields() travel to the
master and come out with the worker's origin and fields, in text and JSON;
a flood from four workers loses, doubles and reorders nothing; --log-level
filters master and worker records alike; SIGUSR1 reopens --log-file,
--stdout and --stderr after a rename; bad --log-format / --log-file values
are refused."""

import array
import fcntl
import json
import os
import re
import resource
import signal
import subprocess
import termios
import threading
import time

import pytest

from fp.base import TIMEOUT, assert_one_line_error, names_flag, report, wait_for
from fp.logs import LOG_LINE_RE, READY_RE, JsonLog
from fp.net import free_port
from fp.proc import cpu_share

RECORD_RE = re.compile(r"^record (\d+) of worker (\d+)$")


def test_worker_records_carry_origin_and_fields_in_text(forkpool, chaos):
    n = 3
    m = forkpool("-w", "2", "-k", chaos, "--", "--log-records", str(n))
    pool = m.wait_pool(2)
    for slot, pid in pool.items():
        m.wait_out(rf"chaos worker {slot} pid {pid}: logged {n}$")
        m.wait_log(rf" info worker {slot} pid {pid}: record {n - 1} of worker {slot} seq={n - 1}$")
    records = [lm for lm in map(LOG_LINE_RE.match, m.err.lines()) if lm]
    for slot, pid in pool.items():
        # "TIME info worker ID pid PID: MESSAGE key=value", in the order logged.
        got = [(lm.group("level"), lm.group("msg")) for lm in records
               if lm.group("origin") == f"worker {slot} pid {pid}"
               and lm.group("msg").startswith("record ")]
        want = [("info", f"record {i} of worker {slot} seq={i}") for i in range(n)]
        assert got == want, f"records of worker {slot}:\n{got}\n{m.describe()}"
    assert m.stop() == 0


def test_worker_records_carry_origin_and_fields_in_json(forkpool, chaos):
    n = 3
    m = forkpool("-w", "2", "--log-format", "json", "-k", chaos, "--", "--log-records", str(n))
    pool = m.wait_pool(2)
    log = JsonLog(m.err.path)

    def records_of(slot, pid):
        return [r for r in log.read() if r["origin"] == "worker" and r["pid"] == pid
                and "stream" not in r and RECORD_RE.match(r["msg"])]
    for slot, pid in pool.items():
        wait_for(lambda: len(records_of(slot, pid)) >= n,
                 what=lambda: f"{n} records of worker {slot}\n{m.describe()}")
    assert m.stop() == 0
    log.read()
    for slot, pid in pool.items():
        got = [(r["worker"], r["level"], r["msg"], r.get("fields")) for r in records_of(slot, pid)]
        want = [(slot, "info", f"record {i} of worker {slot}", {"seq": str(i)}) for i in range(n)]
        assert got == want
        logged = [r for r in log.records if r["pid"] == pid and r.get("stream") == "stdout"
                  and r["msg"] == f"chaos worker {slot} pid {pid}: logged {n}"]
        assert len(logged) == 1 and logged[0]["worker"] == slot, logged
    # The master's own records: its pid, and no stream.
    assert all("stream" not in r and r["pid"] == m.pid
               for r in log.records if r["origin"] == "master")


def test_flood_of_400000_records_from_4_workers_loses_nothing(forkpool, chaos, tmp_path):
    n_workers, n = 4, 100_000
    path = tmp_path / "flood.json"
    state = {
        "total": 0,          # chaos records seen
        "next": {},          # slot -> next expected seq
        "pid": {},           # slot -> pid of its records
        "ready": {},         # slot -> pid, from the master's ready records
        "logged": set(),     # slots whose "logged N" line came through
        "other": 0,          # any other line
    }

    def on_record(r):
        rm = RECORD_RE.match(r["msg"]) if r["origin"] == "worker" and "stream" not in r else None
        if rm:
            i, slot = int(rm.group(1)), int(rm.group(2))
            assert r["worker"] == slot, f"record of worker {slot} tagged worker {r['worker']}"
            assert r["pid"] == state["pid"].setdefault(slot, r["pid"]), (
                f"worker {slot} records from two pids (respawned?): {r}")
            want = state["next"].get(slot, 0)
            assert i == want, f"worker {slot}: record {i} where {want} was due (lost or reordered)"
            assert r["fields"] == {"seq": str(i)} and r["level"] == "info", r
            state["next"][slot] = i + 1
            state["total"] += 1
            return
        state["other"] += 1
        if r["origin"] == "master":
            ready = READY_RE.search(r["msg"])
            if ready:
                state["ready"][int(ready.group(1))] = int(ready.group(2))
        elif r.get("stream") == "stdout" and r["msg"].endswith(f": logged {n}"):
            assert r["msg"] == f"chaos worker {r['worker']} pid {r['pid']}: logged {n}", r
            state["logged"].add(r["worker"])

    log = JsonLog(path, on_record=on_record)
    start = time.monotonic()
    m = forkpool("-w", str(n_workers), "--log-file", path, "--log-format", "json",
                 "-k", chaos, "--", "--log-records", str(n))

    def done():
        if m.proc.poll() is not None:
            raise AssertionError(f"master exited with {m.proc.returncode}\n{m.describe()}")
        log.read()
        return len(state["logged"]) == n_workers and state["total"] >= n_workers * n
    wait_for(done, timeout=120, interval=0.05, what=lambda: (
        f"{n_workers} x {n} records: have {state['total']}, next seq per worker "
        f"{state['next']}, 'logged' from {sorted(state['logged'])}\n{m.describe()}"))
    elapsed = time.monotonic() - start
    assert m.stop() == 0
    log.read()
    assert state["total"] == n_workers * n, f"{state['total']} records, expected {n_workers * n}"
    assert state["next"] == {slot: n for slot in range(n_workers)}
    assert state["pid"] == state["ready"], (
        f"record pids {state['pid']} are not the ready workers {state['ready']}")
    # Everything went to --log-file, and the file ends on a whole line.
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        assert f.read() == b"\n", "the log file ends with half a line"
    assert m.err.text() == "", f"the master wrote to stderr despite --log-file:\n{m.err.tail()}"
    print(f"{n_workers * n} records in {elapsed:.2f} s "
          f"({n_workers * n / elapsed:.0f} records/s, start-up included)")


def test_log_level_warning_drops_info_of_master_and_workers(forkpool, chaos):
    # chaos logs 5 info records, then (--raw-bytes) one warning record:
    # once the warning is out, the info records before it on the same
    # channel would have been out too.
    m = forkpool("-w", "2", "--log-level", "warning", "-k", chaos, "--",
                 "--log-records", "5", "--raw-bytes")
    pids = wait_for(lambda: m.children() if len(m.children()) == 2 else None,
                    what=lambda: f"2 workers\n{m.describe()}")

    def warned():
        origins = {lm.group("origin") for lm in map(LOG_LINE_RE.match, m.err.lines())
                   if lm and lm.group("level") == "warning"}
        return all(any(re.fullmatch(rf"worker \d+ pid {pid}", o) for o in origins)
                   for pid in pids)
    wait_for(warned, what=lambda: f"a warning record from each worker\n{m.describe()}")
    assert m.stop() == 0
    records = [lm for lm in map(LOG_LINE_RE.match, m.err.lines()) if lm]
    low = [lm.string for lm in records if lm.group("level") in ("debug", "info")]
    assert not low, "--log-level warning let through:\n" + "\n".join(low[:20])
    assert not m.find(r"record \d+ of worker"), "a worker's info record came through"


def test_sigusr1_reopens_log_stdout_and_stderr_files(forkpool, chaos, tmp_path):
    log, out, err = tmp_path / "forkpool.log", tmp_path / "workers.out", tmp_path / "workers.err"
    m = forkpool("-w", "2", "--log-file", log, "--stdout", out, "--stderr", err,
                 "-k", chaos, "--", "--say", "to stdout", "--esay", "to stderr")
    pool = m.wait_pool(2)
    for slot, pid in pool.items():
        m.wait_out(rf"^\[worker {slot} pid {pid}\] to stdout$")
        m.wait_out(rf"^\[worker {slot} pid {pid}\] to stderr$")
    for p in (log, out, err):
        os.rename(p, f"{p}.1")
    m.signal(signal.SIGUSR1)
    wait_for(lambda: all(p.exists() for p in (log, out, err)),
             what=lambda: f"new files at the old paths after SIGUSR1\n{m.describe()}")

    # New events: worker 0 killed and respawned, its output printed anew.
    old = pool[0]
    os.kill(old, signal.SIGKILL)
    m.switch_log(str(log))
    new = m.wait_respawn(0, old)
    m.wait_log(rf"worker 0 pid {old} killed by SIGKILL")
    wait_for(lambda: f"[worker 0 pid {new}] to stdout" in out.read_text(errors="replace")
             and f"[worker 0 pid {new}] to stderr" in err.read_text(errors="replace"),
             what=lambda: f"the new worker's lines in the new --stdout/--stderr files\n"
                          f"{m.describe()}")
    assert m.stop() == 0

    def text(p):
        with open(p, errors="replace") as f:
            return f.read()
    old_log, old_out, old_err = (text(f"{p}.1") for p in (log, out, err))
    new_log, new_out, new_err = text(log), text(out), text(err)
    # The renamed files keep what came before, and nothing after.
    for slot, pid in pool.items():
        assert re.search(rf"\bworker {slot} pid {pid} ready\b", old_log)
        assert f"[worker {slot} pid {pid}] to stdout\n" in old_out
        assert f"[worker {slot} pid {pid}] to stderr\n" in old_err
    for name, t in (("log", old_log), ("stdout", old_out), ("stderr", old_err)):
        assert not re.search(rf"\bpid {new}\b", t), f"the renamed {name} file got new lines:\n{t}"
    assert "killed by SIGKILL" not in old_log
    # The new files have what came after, and nothing before.
    assert re.search(rf"\bworker 0 pid {new} ready\b", new_log)
    assert "shutdown complete" in new_log or "shutting down" in new_log
    assert f"[worker 0 pid {new}] to stdout\n" in new_out
    assert f"[worker 0 pid {new}] to stderr\n" in new_err
    for slot, pid in pool.items():
        assert f"[worker {slot} pid {pid}] to stdout" not in new_out
        assert f"[worker {slot} pid {pid}] to stderr" not in new_err
        assert not re.search(rf"\bpid {pid} ready\b", new_log)
    # Nothing of it on the master's stderr.
    assert not any("to stdout" in l or "to stderr" in l or READY_RE.search(l)
                   for l in m.err.lines()), m.err.tail()


@pytest.mark.parametrize("args", [["--log-format", "xml"], ["--log-format", ""],
                                  ["--log-format"]], ids=["xml", "empty", "missing"])
def test_bad_log_format_exits_2_naming_the_flag(run_cli, args):
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "-w", "1", *args)
    assert_one_line_error(res, "--log-format", status=2)


def test_unopenable_log_file_fails_naming_the_flag(run_cli, tmp_path):
    path = tmp_path / "no-such-dir" / "forkpool.log"
    res = run_cli("-b", f"127.0.0.1:{free_port()}", "-w", "1", "--log-file", path)
    assert res.returncode != 0, f"started with --log-file {path}; stderr:\n{res.stderr}"
    assert names_flag(res.stderr, "--log-file"), res.stderr
    assert not os.path.exists(path.parent)


# ---------------------------------------------------------------------------
# The master's sinks never block its loop (sink.c)


def ctl_status(forkpool_bin, sock, timeout=TIMEOUT):
    """`forkpool ctl status --json`: (seconds it took, parsed result)."""
    t0 = time.monotonic()
    res = subprocess.run([forkpool_bin, "ctl", "--control", sock, "--timeout", "5",
                          "--json", "status"], capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    assert res.returncode == 0, f"ctl status: {res}"
    return took, json.loads(res.stdout)


def pipe_fill(fd):
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def test_a_log_pipe_nobody_reads_never_stalls_the_master(spawn, forkpool_bin, chaos,
                                                          tmp_path, capsys):
    """stderr a pipe nobody reads, filled by the workers' output and a storm
    of SIGHUPs: the master still answers, respawns and stops; records that
    could not be written are counted, and the count is logged once the
    pipe is read again."""
    sock = str(tmp_path / "c.sock")
    r, w = os.pipe()
    port = free_port()
    # 2 MB of output per worker: more than the master's queue holds, so
    # records must be dropped once the pipe is given up on.
    proc = spawn("-w", "2", "-b", f"127.0.0.1:{port}", "--control", sock,
                 "-k", chaos, "--", "--lines", "10000:200", stdout=w, stderr=w)
    os.close(w)
    try:
        wait_for(lambda: os.path.exists(sock), what="the control socket")
        wait_for(lambda: pipe_fill(r) >= 60000, what="a full stderr pipe")
        for _ in range(300):
            os.kill(proc.pid, signal.SIGHUP)
        took = [ctl_status(forkpool_bin, sock)[0] for _ in range(20)]
        _, st = ctl_status(forkpool_bin, sock)
        victim = next(x for x in st["workers"] if x["role"] == "worker" and x["pid"])
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced():
            ws = ctl_status(forkpool_bin, sock)[1]["workers"]
            return any(x["id"] == victim["id"] and x["pid"] not in (None, victim["pid"])
                       and x["state"] == "ready" for x in ws)
        wait_for(replaced, what=f"a new worker in slot {victim['id']}")
        share = cpu_share(proc.pid, 2)
        assert share < 0.2, f"the master used {share:.0%} of a CPU with its log stuck"
        assert pipe_fill(r) >= 60000, "someone read the pipe"

        # Read the pipe again: the master says what it could not write.
        got = bytearray()
        done = threading.Event()

        def drain():
            while not done.is_set():
                try:
                    chunk = os.read(r, 1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                got.extend(chunk)
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        wait_for(lambda: re.search(rb"master: (\d+) records to stderr were dropped over", got),
                 what="the dropped-records report")
        dropped = int(re.search(rb"master: (\d+) records to stderr were dropped", got).group(1))
        assert dropped > 0
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        done.set()
        t.join(TIMEOUT)
    finally:
        os.close(r)
    took.sort()
    report(capsys, f"ctl status with stderr stuck, 20 calls: p50 {took[10] * 1e3:.1f} ms, "
                   f"max {took[-1] * 1e3:.1f} ms; {dropped} records dropped and reported")


def test_a_stopped_reader_slows_workers_down_but_loses_nothing_if_it_resumes(
        spawn, forkpool_bin, chaos, tmp_path):
    """A reader that only pauses (less than the stuck limit at a time)
    loses no record: the master stops reading the workers while its queue
    is full, and their records wait in the channels (back-pressure)."""
    sock = str(tmp_path / "c.sock")
    r, w = os.pipe()
    n = 20000
    proc = spawn("-w", "2", "-b", f"127.0.0.1:{free_port()}", "--control", sock,
                 "-k", chaos, "--", "--log-records", str(n), stdout=w, stderr=w)
    os.close(w)
    got = bytearray()
    try:
        deadline = time.monotonic() + TIMEOUT * 3
        while got.count(b"logged %d\n" % n) < 2 and time.monotonic() < deadline:
            # Read a little, then nothing for 0.3 s: a slow reader.
            got.extend(os.read(r, 1 << 16))
            if len(got) % 7 == 0:
                time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        while True:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            got.extend(chunk)
        assert proc.wait(TIMEOUT) == 0
    finally:
        os.close(r)
    text = got.decode(errors="replace")
    assert "were dropped" not in text
    for slot in (0, 1):
        seqs = [int(x) for x in re.findall(rf"record (\d+) of worker {slot} seq=", text)]
        assert seqs == list(range(n)), f"worker {slot}: {len(seqs)} records"


def test_sigusr1_reopen_of_a_fifo_without_reader_does_not_block(spawn, forkpool_bin, tmp_path):
    fifo = str(tmp_path / "log.fifo")
    sock = str(tmp_path / "c.sock")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    err = open(tmp_path / "stderr", "wb")
    proc = spawn("-w", "1", "-b", f"127.0.0.1:{free_port()}", "--control", sock,
                 "--log-file", fifo, stderr=err)
    try:
        wait_for(lambda: os.path.exists(sock), what="the control socket")
        os.close(reader)
        reader = None
        os.kill(proc.pid, signal.SIGUSR1)
        for _ in range(3):
            ctl_status(forkpool_bin, sock)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if reader is not None:
            os.close(reader)
        err.close()


def test_a_log_past_rlimit_fsize_is_reported_not_fatal(spawn, forkpool_bin, chaos, tmp_path):
    """With RLIMIT_FSIZE the log file fills up: the master must not die of
    SIGXFSZ; the write fails with EFBIG, which it says once on stderr."""
    log = tmp_path / "master.log"
    sock = str(tmp_path / "c.sock")
    err = tmp_path / "stderr"
    limit = 16384
    with open(err, "wb") as e:
        proc = spawn("-w", "1", "-b", f"127.0.0.1:{free_port()}", "--control", sock,
                     "--log-file", log, "-k", chaos, "--", "--log-records", "2000",
                     stderr=e,
                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                           (limit, limit)))
    wait_for(lambda: os.path.exists(sock), what="the control socket")
    wait_for(lambda: b"File too large" in err.read_bytes(),
             what=lambda: f"the EFBIG report; stderr: {err.read_bytes()[-500:]!r}")
    for _ in range(3):
        ctl_status(forkpool_bin, sock)
    os.kill(proc.pid, signal.SIGHUP)  # more records, more failed writes
    ctl_status(forkpool_bin, sock)
    assert proc.poll() is None, f"the master died: {proc.returncode}"
    lines = [l for l in err.read_text(errors="replace").splitlines() if "File too large" in l]
    assert len(lines) == 1 and str(log) in lines[0], lines
    assert log.stat().st_size <= limit
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0


def test_text_log_escapes_what_would_forge_lines_or_drive_a_terminal(forkpool, chaos):
    forged = "2026-01-01T00:00:00.000000Z info master: forged"
    m = forkpool("-w", "1", "--worker-timeout", "1", "--check-interval", "0.2",
                 "-k", chaos, "--",
                 "--log", "x\n" + forged,
                 "--log", "bell\x07 esc\x1b[2K c1\u009b del\x7f cr\r end",
                 "--log", "tab\tkept",
                 "--activity", "busy\n" + forged,
                 "--say", "out\x1b]52;c;ZXZpbA==\x07 line",
                 "--hang-after", "500")
    m.wait_log(r"hung: no heartbeat")
    raw = open(m.err.path, "rb").read()
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]", raw), \
        re.search(rb".{0,40}([\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]).{0,40}", raw)
    assert not any(l.startswith(forged[:20]) for l in m.err.lines()), "a line was forged"
    text = raw.decode()
    assert ": x\\n" + forged in text
    assert "bell\\x07 esc\\x1b[2K c1\\u009b del\\x7f cr\\r end" in text
    assert "tab\tkept" in text
    assert '"busy\\n' + forged + '"' in text
    assert "] out\\x1b]52;c;ZXZpbA==\\x07 line" in text
