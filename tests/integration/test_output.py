"""Worker output capture: stdout and stderr lines of every worker come back
through the master, tagged "[worker ID pid PID] ", to its stderr or to the
--stdout/--stderr files; a last line without newline survives an abort; with
--log-format json every line the master writes is a JSON object, whatever
bytes the worker printed; lines of several workers never mix."""

import os
import re

import pytest

from fp.base import names_flag, shorten, wait_for
from fp.logs import LOG_LINE_RE, OUTPUT_LINE_RE, JsonLog, read_json_log
from fp.net import free_port
from fp.proc import is_alive

# The line chaos --raw-bytes writes (minus its newline): every control byte
# but the newline, a NUL, invalid UTF-8, then "end".  Its log record is the
# same bytes cut at the NUL (printf's %s): RAW_CONTROLS.
RAW_CONTROLS = bytes(c for c in range(0x01, 0x20) if c != 0x0A)
RAW_LINE = RAW_CONTROLS + b"\x00" + b"\x80\xff\xc3\x28\xed\xa0\x80" + b"end"


def tagged(slot, pid, line):
    """The exact line the master writes for a worker's output line."""
    return f"[worker {slot} pid {pid}] {line}"


def test_printf_and_fprintf_stderr_lines_are_tagged_with_id_and_pid(forkpool, chaos):
    m = forkpool("-w", "2", "-k", chaos, "--",
                 "--say", "hello from stdout", "--esay", "hello from stderr")
    pool = m.wait_pool(2)
    for slot, pid in pool.items():
        for text in ("hello from stdout", "hello from stderr"):
            line = tagged(slot, pid, text)
            wait_for(lambda: line in m.err.lines(),
                     what=lambda: f"{line!r} on the master's stderr\n{m.describe()}")
        # The hook lines chaos prints are captured the same way.
        m.wait_log("^" + re.escape(tagged(slot, pid, f"chaos worker {slot} pid {pid}: main")) + "$")
    assert m.stop() == 0
    lines = m.err.lines()
    for text in ("hello from stdout", "hello from stderr"):
        got = sorted(l for l in lines if l.endswith(text))
        want = sorted(tagged(s, p, text) for s, p in pool.items())
        assert got == want, f"lines ending in {text!r}:\n{got}\nexpected:\n{want}"
    # Every captured line carries the tag of the worker that printed it.
    for line in lines:
        om = OUTPUT_LINE_RE.match(line)
        if om and om.group("line").startswith("chaos worker "):
            assert om.group("line").startswith(
                f"chaos worker {om.group('id')} pid {om.group('pid')}: "), line
    # Workers no longer write to the master's own stdout.
    assert m.out.text() == "", f"the master's stdout is not empty:\n{m.out.tail()}"


def test_stdout_and_stderr_files_receive_the_lines(forkpool, chaos, tmp_path):
    out_file = tmp_path / "workers.out"
    err_file = tmp_path / "workers.err"
    out_file.write_text("kept from before\n")  # opened for appending
    m = forkpool("-w", "2", "-k", chaos, "--stdout", out_file, "--stderr", err_file, "--",
                 "--say", "hello from stdout", "--esay", "hello from stderr")
    pool = m.wait_pool(2)
    for slot, pid in pool.items():
        m.wait_out("^" + re.escape(tagged(slot, pid, "hello from stdout")) + "$")
        m.wait_out("^" + re.escape(tagged(slot, pid, "hello from stderr")) + "$")
    assert m.stop() == 0
    out_lines = out_file.read_text(errors="replace").split("\n")
    err_lines = err_file.read_text(errors="replace").split("\n")
    assert out_lines[0] == "kept from before", "--stdout FILE was truncated, not appended to"
    for slot, pid in pool.items():
        assert tagged(slot, pid, "hello from stdout") in out_lines
        assert tagged(slot, pid, f"chaos worker {slot} pid {pid}: on_start") in out_lines
        assert tagged(slot, pid, "hello from stderr") in err_lines
    assert not any("hello from stderr" in l for l in out_lines), "stderr line in --stdout file"
    assert not any("hello from stdout" in l for l in err_lines), "stdout line in --stderr file"
    # Neither stream is copied to the master's stderr; its own log stays there.
    assert not any("hello from" in l or "chaos worker" in l for l in m.err.lines()), (
        f"worker output on the master's stderr:\n{m.err.tail()}")
    assert m.find(r"worker \d+ pid \d+ ready")
    assert m.out.text() == ""


@pytest.mark.parametrize("flag", ["--stdout", "--stderr"])
def test_the_stream_without_a_file_goes_to_the_log(forkpool, chaos, tmp_path, flag):
    path = tmp_path / "workers.file"
    m = forkpool("-w", "1", "-k", chaos, flag, path, "--",
                 "--say", "hello from stdout", "--esay", "hello from stderr")
    pid = m.wait_pool(1)[0]
    to_file, to_log = (("stdout", "stderr") if flag == "--stdout" else ("stderr", "stdout"))
    m.wait_out("^" + re.escape(tagged(0, pid, f"hello from {to_file}")) + "$")
    m.wait_log("^" + re.escape(tagged(0, pid, f"hello from {to_log}")) + "$")
    assert m.stop() == 0
    in_file = path.read_text(errors="replace")
    assert f"hello from {to_log}" not in in_file
    assert not any(f"hello from {to_file}" in l for l in m.err.lines())


def test_partial_last_line_before_abort_appears_before_the_exit(forkpool, chaos):
    text = "last words, no newline"
    m = forkpool("-w", "1", "-k", chaos, "--", "--partial", text)
    pid = int(m.wait_log(r"worker 0 pid (\d+) started").group(1))
    killed = m.wait_log(rf"worker 0 pid {pid} killed by SIGABRT").string
    # The pipes were drained before the exit was logged: the line is
    # already there, whole, and before the exit line.
    lines = m.err.lines()
    line = tagged(0, pid, text)
    assert line in lines, f"{line!r} missing from the master's stderr\n{m.describe()}"
    assert lines.index(line) < lines.index(killed), (
        f"the last line came after the exit line\n{m.describe()}")
    # The line before it (printed with stdio) is intact too.
    assert tagged(0, pid, f"chaos worker 0 pid {pid}: main") in lines


def test_json_format_every_line_parses_even_with_control_bytes_and_bad_utf8(forkpool, chaos):
    m = forkpool("-w", "2", "--log-format", "json", "-k", chaos, "--", "--raw-bytes")
    pool = m.wait_pool(2)   # READY_RE finds "worker ID pid PID ready" in the JSON text
    log = JsonLog(m.err.path)   # parses every line as it arrives, strictly

    def raw_line_and_record(pid):
        recs = [r for r in log.read() if r["origin"] == "worker" and r["pid"] == pid]
        return (any(r.get("stream") == "stdout" and "end" in r["msg"] for r in recs)
                and any(r["level"] == "warning" and "stream" not in r for r in recs))
    for pid in pool.values():
        wait_for(lambda: raw_line_and_record(pid),
                 what=lambda: f"the --raw-bytes line and record of pid {pid}\n{m.describe()}")
    assert m.stop() == 0

    records = read_json_log(m.err.path)   # every line, to the end of the file
    want_line = RAW_LINE.decode("utf-8", errors="replace")
    for slot, pid in pool.items():
        mine = [r for r in records if r["origin"] == "worker" and r["pid"] == pid]
        assert all(r["worker"] == slot for r in mine), f"pid {pid} is not worker {slot}: {mine}"
        captured = [r for r in mine if "stream" in r]
        on_start = [r for r in captured if r["msg"] == f"chaos worker {slot} pid {pid}: on_start"]
        assert [r["stream"] for r in on_start] == ["stdout"], captured
        raw = [r for r in captured if "end" in r["msg"]]
        assert len(raw) == 1, f"--raw-bytes lines of pid {pid}: {raw}"
        assert raw[0]["stream"] == "stdout"
        assert "\ufffd" in raw[0]["msg"] and raw[0]["msg"].endswith("end")
        assert raw[0]["msg"] == want_line, (
            f"raw line of pid {pid}: got {raw[0]['msg']!r}, expected {want_line!r} "
            "(control bytes and NUL kept, each invalid byte U+FFFD)")
        warn = [r for r in mine if r["level"] == "warning" and "stream" not in r]
        assert [r["msg"] for r in warn] == [RAW_CONTROLS.decode()], (
            f"the forwarded --raw-bytes record of pid {pid}: {warn}")
    master = [r for r in records if r["origin"] == "master"]
    assert all(r["pid"] == m.pid and "stream" not in r for r in master), master[:5]
    ready = [r for r in master if re.search(r"\bworker \d+ pid \d+ ready\b", r["msg"])]
    assert len(ready) == 2, f"ready records: {ready}"
    assert m.out.text() == ""


def test_lines_of_several_workers_never_mix(forkpool, chaos):
    # Four workers print at once, each 120 stdout and 120 stderr lines of
    # ~1 KB: the master reads the pipes in chunks that cut lines anywhere,
    # yet every line must come out whole, once, tagged, in order.
    n_workers, n_lines, width = 4, 120, 1000
    outs = [f"o{k:03d} " + "x" * width for k in range(n_lines)]
    errs = [f"e{k:03d} " + "y" * width for k in range(n_lines)]
    args = []
    for o in outs:
        args += ["--say", o]
    for e in errs:
        args += ["--esay", e]
    m = forkpool("-w", str(n_workers), "-k", chaos, "--", *args)
    pool = m.wait_pool(n_workers)
    for slot, pid in pool.items():
        for last in (outs[-1], errs[-1]):
            # Only the start: a cut line must fail below, with its content.
            start = tagged(slot, pid, last[:5])
            wait_for(lambda: any(l.startswith(start) for l in m.err.lines()),
                     what=lambda: f"{start!r}... on the master's stderr\n{m.describe()}")
    assert m.stop() == 0
    assert m.err.text().endswith("\n")
    expected = set(outs) | set(errs)
    got = {(pid, kind): [] for pid in pool.values() for kind in "oe"}
    for line in m.err.lines():
        if LOG_LINE_RE.match(line):
            continue
        om = OUTPUT_LINE_RE.match(line)
        assert om, f"neither a log record nor a tagged line: {line[:200]!r}..."
        slot, pid, text = int(om.group("id")), int(om.group("pid")), om.group("line")
        assert pool.get(slot) == pid, f"tag of an unknown worker: {line[:80]!r}"
        if text.startswith("chaos worker "):
            assert text.startswith(f"chaos worker {slot} pid {pid}: "), line
            continue
        whole = text in expected   # (not in the assert: pytest would print the set)
        assert whole, (
            f"mixed or cut line from pid {pid}: {text[:60]!r}...{text[-60:]!r} "
            f"({len(text)} bytes)")
        got[(pid, text[0])].append(text)
    for slot, pid in pool.items():
        for kind, want in (("o", outs), ("e", errs)):
            have = [t[:4] for t in got[(pid, kind)]]   # the line numbers, "o007"
            same = have == [t[:4] for t in want]
            assert same, (f"worker {slot}: lines lost, doubled or reordered: got "
                          f"{len(have)} lines {shorten(' '.join(have), 400)}")


@pytest.mark.parametrize("flag", ["--stdout", "--stderr"])
def test_unopenable_output_file_fails_naming_the_flag(run_cli, tmp_path, flag):
    path = tmp_path / "no-such-dir" / "workers.log"
    res = run_cli("-w", "1", "-b", f"127.0.0.1:{free_port()}", flag, path)
    assert res.returncode != 0, f"started with {flag} {path}; stderr:\n{res.stderr}"
    assert names_flag(res.stderr, flag), f"the error does not name {flag}:\n{res.stderr}"
    assert not os.path.exists(path.parent)


def test_a_grandchild_writing_forever_after_its_worker_died_does_not_hang_the_master(
        forkpool, chaos, run_cli, tmp_path):
    """A worker leaves behind a process that keeps its stdout and writes
    "y" forever; the worker is killed.  The master reads what the worker
    left (bounded by the pipe's size), says the pipe is still held, closes
    it, replaces the worker and stays responsive; the writer then gets
    EPIPE.  It used to read that pipe until the end of time."""
    sock = str(tmp_path / "c.sock")
    once = tmp_path / "orphan-started"
    m = forkpool("-w", "1", "--control", sock, "-k", chaos, "--",
                 "--orphan-writer", once)
    pid = m.wait_pool(1)[0]
    writer = int(m.wait_out(rf"chaos worker 0 pid {pid}: orphan writer pid (\d+)$").group(1))
    os.kill(pid, 9)
    # (", which writes on" when the pipe still held more than it can hold
    # after the worker's death: whether it did is a matter of timing.)
    m.wait_log(rf"worker 0 pid {pid} exited, but its stdout is still open in a process it "
               rf"left behind(, which writes on)?; no longer reading it")
    m.wait_respawn(0, pid)
    res = run_cli("ctl", "--control", sock, "status")
    assert res.returncode == 0, res
    wait_for(lambda: not is_alive(writer), what=f"the orphan writer {writer} to get EPIPE")
    # No more of its output: the log grows by the master's own lines only.
    size = os.path.getsize(m.err.path)
    assert m.stop() == 0
    grew = os.path.getsize(m.err.path) - size
    assert grew < 16384, f"the log grew by {grew} bytes after the pipe was closed"
