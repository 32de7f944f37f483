"""Log records: a worker's fpool_log()/fpool_log_fields() travel to the
master and come out with the worker's origin and fields, in text and JSON;
a flood from four workers loses, doubles and reorders nothing; --log-level
filters master and worker records alike; SIGUSR1 reopens --log-file,
--stdout and --stderr after a rename; bad --log-format / --log-file values
are refused."""

import os
import re
import signal
import time

import pytest

from conftest import (LOG_LINE_RE, READY_RE, JsonLog, assert_one_line_error, free_port,
                      names_flag, wait_for)

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
