"""The control socket (--control PATH) and its client `forkpool ctl`.

One JSON object per line each way; every request carries a hex "id" that
the reply echoes.  These tests talk to the socket directly
(fp.control.Control) and through `forkpool ctl`, and check what they are
told against /proc and the master's log: the socket file is private and
removed at exit, status lists exactly the live workers, scale / add /
remove / kill and SIGTTIN / SIGTTOU move the pool as they say, removed
workers stop gracefully, output returns what a slot printed (bounded,
and escaped on a terminal), and ctl fails clearly without a master or on
bad usage.  Bad, many and hostile clients: test_control_clients.py.
"""

import json
import os
import re
import signal
import socket
import stat

import pytest

from fp.base import wait_for
from fp.control import Control, call, check_status, start_pool, wait_status_pool
from fp.proc import is_alive

# ---------------------------------------------------------------------------
# Helpers


def chaos_args(chaos, *flags):
    return ["-k", chaos, "--"] + list(flags)


def assert_stopped_gracefully(m, slot, pid):
    """Worker `pid` got SIGTERM (the chaos worker ran on_stop, main
    returned) and exited 0."""
    m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b")
    m.wait_out(rf"chaos worker {slot} pid {pid}: on_stop$")
    m.wait_out(rf"chaos worker {slot} pid {pid}: main returned$")
    assert not m.find(rf"chaos worker {slot} pid {pid}: main cancelled$", stream="out")
    assert not is_alive(pid)


# ---------------------------------------------------------------------------
# The socket file


STOPS = ["SIGTERM", "SIGINT", "ctl-stop", "ctl-stop-now"]


@pytest.mark.parametrize("how", STOPS)
def test_socket_is_0600_and_removed_after_exit(forkpool, chaos, run_cli, sock_path, how):
    m, pool = start_pool(forkpool, sock_path, 2, *chaos_args(chaos))
    st = os.lstat(sock_path)
    assert stat.S_ISSOCK(st.st_mode), f"{sock_path} is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o600, f"mode {oct(stat.S_IMODE(st.st_mode))}"
    assert st.st_uid == os.geteuid()
    assert call(sock_path, "status")["pid"] == m.pid
    if how == "SIGTERM":
        m.signal(signal.SIGTERM)
    elif how == "SIGINT":
        m.signal(signal.SIGINT)
    else:
        res = run_cli("ctl", "--control", sock_path, "stop", *(["--now"] if how == "ctl-stop-now" else []))
        assert res.returncode == 0, f"ctl stop: {res}"
    assert m.wait_exit() == 0, m.describe()
    assert not os.path.lexists(sock_path), f"{sock_path} still exists after the master exited"
    m.assert_tree_gone()
    graceful = how in ("SIGTERM", "ctl-stop")
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} exited", need_alive=False)
        line = f"chaos worker {slot} pid {pid}: " + ("main returned" if graceful else "main cancelled")
        assert m.find(re.escape(line) + "$", stream="out"), f"no {line!r}\n{m.describe()}"


def test_ctl_stop_stops_the_pool_gracefully(forkpool, chaos, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 3, *chaos_args(chaos))
    res = run_cli("ctl", "--control", sock_path, "stop")
    assert res.returncode == 0, f"ctl stop: {res}"
    assert res.stdout.strip() == "ok", res
    assert m.wait_exit() == 0, m.describe()
    m.assert_tree_gone()
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0\b", need_alive=False)
        assert m.find(rf"chaos worker {slot} pid {pid}: on_stop$", stream="out"), m.describe()
    assert m.find(r"control: stop \(graceful\)")
    assert not os.path.lexists(sock_path)


def test_ctl_stop_is_answered_while_no_worker_is_live(forkpool, chaos, run_cli, sock_path):
    # A worker that always fails to start: its slot spends most of its time
    # in backoff, with no process.  Stop it then: the master has nothing
    # to wait for, and must still answer before it exits.
    m = forkpool("-w", "1", "--control", sock_path, *chaos_args(chaos, "--fail-start"))

    def in_long_backoff():
        st = call(sock_path, "status")
        ws = st["workers"]
        return (st["live"] == 0 and len(ws) == 1 and ws[0]["state"] == "backoff"
                and ws[0]["pid"] is None and ws[0]["backoff_left"] >= 1.0)
    wait_for(lambda: os.path.exists(sock_path), what="the control socket")
    wait_for(in_long_backoff, what=lambda: f"a backoff of a second or more\n{m.describe()}")
    res = run_cli("ctl", "--control", sock_path, "stop")
    assert m.wait_exit() == 0, m.describe()
    assert res.returncode == 0 and res.stdout.strip() == "ok", (
        f"ctl stop with no live worker: {res}\n{m.describe()}")
    assert not os.path.lexists(sock_path)


# ---------------------------------------------------------------------------
# status


def test_status_over_the_socket_lists_exactly_the_live_workers(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 3)
    with Control(sock_path) as c:
        status = c.call("status")
        check_status(m, status, pool)
        # The connection serves more than one request.
        again = c.call("status")
        check_status(m, again, pool)
        assert again["uptime"] >= status["uptime"]
    assert sorted(pool) == [0, 1, 2]


def test_ctl_json_status_lists_exactly_the_live_workers(forkpool, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 3)
    res = run_cli("ctl", "--control", sock_path, "--json", "status")
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert len(lines) == 1, f"--json prints one line: {res.stdout!r}"
    check_status(m, json.loads(lines[0]), pool)


def test_ctl_uses_forkpool_control_from_the_environment(forkpool, run_cli, sock_path, monkeypatch):
    m, pool = start_pool(forkpool, sock_path, 2)
    monkeypatch.setenv("FORKPOOL_CONTROL", sock_path)
    res = run_cli("ctl", "--json", "status")
    assert res.returncode == 0, res
    check_status(m, json.loads(res.stdout), pool)


def test_ctl_status_table_has_an_aligned_row_per_worker(forkpool, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 4)
    res = run_cli("ctl", "--control", sock_path, "status")
    assert res.returncode == 0, res
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert re.search(rf"\bmaster pid {m.pid}\b", lines[0]), lines[0]
    assert re.search(r"\b4 of 4 workers\b", lines[0]), lines[0]
    header = next(i for i, l in enumerate(lines) if l.split()[:3] == ["ID", "PID", "STATE"])
    cols = ["ID", "PID", "STATE", "UPTIME", "RESTARTS", "HEARTBEAT", "RSS", "REQUESTS"]
    starts = [lines[header].index(c) for c in cols]
    rows = lines[header + 1:]
    assert len(rows) == len(pool), f"expected {len(pool)} rows:\n{res.stdout}"
    seen = {}
    for row in rows:
        fields = row.split()
        seen[int(fields[0])] = int(fields[1])
        assert fields[2] == "ready", row
        # Aligned: every column starts where its heading does.
        for c, at in zip(cols, starts):
            assert row[at] != " " and (at == 0 or row[at - 1] == " "), (
                f"column {c} of {row!r} does not start at {at}:\n{res.stdout}")
    assert seen == pool, f"table {seen} != pool {pool}\n{res.stdout}"


# ---------------------------------------------------------------------------
# scale, add, remove, SIGTTIN / SIGTTOU


def test_scale_2_to_5_to_1_and_back_to_3(forkpool, chaos, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2, *chaos_args(chaos))
    first = dict(pool)

    # Up to 5 through the socket: the reply is the new status.
    status = call(sock_path, "scale", workers=5)
    assert status["target"] == 5
    pool = wait_status_pool(sock_path, m, 5)
    assert sorted(pool) == [0, 1, 2, 3, 4]
    assert {s: pool[s] for s in first} == first, "scaling up replaced running workers"
    m.wait_log(r"scaled to 5 workers")

    # Down to 1 with `forkpool ctl scale`: the highest slots go, gracefully.
    res = run_cli("ctl", "--control", sock_path, "--json", "scale", "1")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["target"] == 1
    after = wait_status_pool(sock_path, m, 1)
    assert after == {0: first[0]}, f"slot 0 should stay as it was: {after}"
    for slot in (1, 2, 3, 4):
        assert_stopped_gracefully(m, slot, pool[slot])

    # And up again: the freed slot ids 1 and 2 are used again, by new workers.
    call(sock_path, "scale", workers=3)
    again = wait_status_pool(sock_path, m, 3)
    assert sorted(again) == [0, 1, 2]
    assert again[0] == first[0]
    assert again[1] not in pool.values() and again[2] not in pool.values()
    # Scaling to the current size changes nothing.
    call(sock_path, "scale", workers=3)
    assert wait_status_pool(sock_path, m, 3) == again
    assert m.alive()


def test_add_and_remove_one_slot(forkpool, chaos, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2, *chaos_args(chaos))
    assert call(sock_path, "add", worker=2) is True
    grown = wait_status_pool(sock_path, m, 3)
    assert {0: pool[0], 1: pool[1]}.items() <= grown.items()
    res = run_cli("ctl", "--control", sock_path, "remove", "1")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res
    m.wait_log(rf"worker 1 pid {grown[1]} exited")
    assert_stopped_gracefully(m, 1, grown[1])
    left = wait_for(lambda: m.pool_state(2), what=lambda: m.describe())
    assert left == {0: grown[0], 2: grown[2]}, left
    status = call(sock_path, "status")
    assert {w["id"]: w["pid"] for w in status["workers"]} == left
    assert status["target"] == 2
    # Refusals name the problem and change nothing.
    with Control(sock_path) as c:
        rep = c.request("add", worker=0)
        assert rep["ok"] is False and "already" in rep["error"], rep
        rep = c.request("remove", worker=1)
        assert rep["ok"] is False and "no such worker" in rep["error"], rep
        c.call("remove", worker=2)
        wait_status_pool(sock_path, m, 1)
        rep = c.request("remove", worker=0)
        assert rep["ok"] is False and "last" in rep["error"], rep
    assert wait_status_pool(sock_path, m, 1) == {0: pool[0]}


def test_sigttin_and_sigttou_move_the_pool_one_slot_at_a_time(forkpool, chaos, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2, *chaos_args(chaos))
    first = dict(pool)
    # One signal at a time: two pending SIGTTINs would merge into one.
    for n in (3, 4, 5):
        m.signal(signal.SIGTTIN)
        pool = wait_status_pool(sock_path, m, n)
        assert sorted(pool) == list(range(n))
        m.wait_log(rf"SIGTTIN: added worker {n - 1} \({n} now\)")
    assert {s: pool[s] for s in first} == first
    full = dict(pool)
    for n in (4, 3, 2, 1):
        m.signal(signal.SIGTTOU)
        pool = wait_status_pool(sock_path, m, n)
        # The highest slot went, gracefully; the others stayed.
        assert pool == {s: full[s] for s in range(n)}, pool
        assert_stopped_gracefully(m, n, full[n])
    # Never below one.
    m.signal(signal.SIGTTOU)
    m.wait_log(r"SIGTTOU: not removing worker 0")
    assert wait_status_pool(sock_path, m, 1) == {0: first[0]}
    # And the freed slot 1 is used again.
    m.signal(signal.SIGTTIN)
    pool = wait_status_pool(sock_path, m, 2)
    assert pool[0] == first[0] and pool[1] not in full.values()
    assert m.alive()


# ---------------------------------------------------------------------------
# kill, output


KILLS = [
    # (signal argument or None, via, what the master logs)
    ("KILL", "ctl", r"killed by SIGKILL"),
    ("SIGKILL", "socket", r"killed by SIGKILL"),
    ("TERM", "socket", r"exited with status 0"),
    (None, "ctl", r"exited with status 0"),  # TERM is the default
]


@pytest.mark.parametrize("sig,via,exit_re", KILLS,
                         ids=[f"{s or 'default'}-{v}" for s, v, _ in KILLS])
def test_kill_replaces_the_worker_in_its_slot(forkpool, chaos, run_cli, sock_path, sig, via, exit_re):
    m, pool = start_pool(forkpool, sock_path, 3, *chaos_args(chaos))
    victim = pool[1]
    if via == "ctl":
        res = run_cli("ctl", "--control", sock_path, "kill", "1", *([sig] if sig else []))
        assert res.returncode == 0 and res.stdout.strip() == "ok", res
    else:
        assert call(sock_path, "kill", worker=1, signal=sig) is True
    m.wait_log(rf"control: sent SIG\w+ to worker 1 pid {victim}\b")
    m.wait_log(rf"worker 1 pid {victim} {exit_re}")
    new = m.wait_respawn(1, victim)
    after = wait_status_pool(sock_path, m, 3)
    assert after == {0: pool[0], 1: new, 2: pool[2]}, after
    assert not is_alive(victim)
    status = call(sock_path, "status")
    w1 = next(w for w in status["workers"] if w["id"] == 1)
    assert w1["restarts"] == 1, w1
    assert re.fullmatch(exit_re, w1["last_exit"]), w1
    assert status["restarts"] == 1, status
    if sig in (None, "TERM"):
        assert_stopped_gracefully(m, 1, victim)
    m.wait_no_zombies()


def test_kill_errors_name_the_problem(forkpool, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    with Control(sock_path) as c:
        rep = c.request("kill", worker=7, signal="KILL")
        assert rep["ok"] is False and "no such worker" in rep["error"], rep
        rep = c.request("kill", worker=0, signal="NOSUCHSIG")
        assert rep["ok"] is False and "signal" in rep["error"], rep
    res = run_cli("ctl", "--control", sock_path, "kill", "0", "NOSUCHSIG")
    assert res.returncode == 2 and "NOSUCHSIG" in res.stderr, res
    res = run_cli("ctl", "--control", sock_path, "kill", "9")
    assert res.returncode == 1 and "no such worker" in res.stderr, res
    assert wait_status_pool(sock_path, m, 2) == pool


def test_output_returns_the_last_lines_of_a_slot(forkpool, chaos, run_cli, sock_path):
    says = ["alpha one", "alpha two", "alpha three"]
    flags = []
    for s in says:
        flags += ["--say", s]
    m, pool = start_pool(forkpool, sock_path, 2, *chaos_args(chaos, *flags))
    old = pool[1]
    head = [f"chaos worker 1 pid {old}: on_start", f"chaos worker 1 pid {old}: main"]

    def lines(slot, n=None):
        args = {"worker": slot} if n is None else {"worker": slot, "lines": n}
        res = call(sock_path, "output", **args)
        assert res["worker"] == slot, res
        assert all(isinstance(l, str) for l in res["lines"]), res
        return res["lines"]

    # The master reads the pipes asynchronously: wait for the last line.
    wait_for(lambda: lines(1)[-1:] == says[-1:], what=lambda: f"output 1: {lines(1)}")
    assert lines(1) == head + says
    assert lines(1, 2) == says[-2:]
    assert lines(1, 1) == says[-1:]
    assert lines(1, 1000) == head + says
    assert all(f"pid {pool[0]}" in l for l in lines(0) if l.startswith("chaos")), lines(0)
    assert not any(f"pid {old}" in l for l in lines(0)), "slot 0's output has slot 1's lines"

    # `forkpool ctl output` prints them as plain lines.
    res = run_cli("ctl", "--control", sock_path, "output", "1", "2")
    assert res.returncode == 0, res
    assert res.stdout.splitlines() == says[-2:], res
    res = run_cli("ctl", "--control", sock_path, "--json", "output", "1", "2")
    assert json.loads(res.stdout) == {"worker": 1, "lines": says[-2:]}, res

    # Killed and replaced: the slot keeps the old worker's lines, then the
    # new one's.
    assert call(sock_path, "kill", worker=1, signal="KILL") is True
    new = m.wait_respawn(1, old)
    want = head + says + [f"chaos worker 1 pid {new}: on_start", f"chaos worker 1 pid {new}: main"] + says
    wait_for(lambda: lines(1) == want, what=lambda: f"output 1 == {want}, got {lines(1)}")

    # A slot that never existed.
    with Control(sock_path) as c:
        rep = c.request("output", worker=9)
        assert rep["ok"] is False and "no such worker" in rep["error"], rep


def test_output_of_long_lines_always_answers_and_is_bounded(forkpool, chaos, run_cli, sock_path):
    """Workers printing 16 KiB lines: a slot keeps a bounded number of
    bytes (long lines cut, with a marker), `ctl output` always answers,
    and the master's memory stays small."""
    m, pool = start_pool(forkpool, sock_path, 4, *chaos_args(chaos, "--lines", "300:16384",
                                                       "--say", "done printing"))
    for slot in range(4):
        wait_for(lambda: call(sock_path, "output", worker=slot, lines=1)["lines"] == ["done printing"],
                 what=lambda: f"slot {slot}'s last line\n{m.describe()}")
    for slot in range(4):
        res = run_cli("ctl", "--control", sock_path, "output", str(slot), "100000")
        assert res.returncode == 0, res
        lines = res.stdout.splitlines()
        assert lines[-1] == "done printing", lines[-1][:100]
        long = [l for l in lines if l.startswith("xxxx")]
        assert long, "no long line kept"
        assert all(len(l) <= 4096 and re.search(r"\[\.\.\. \d+ bytes cut\]$", l) for l in long), \
            [l[-40:] for l in long]
        assert sum(len(l) + 1 for l in lines) <= 64 * 1024, sum(len(l) + 1 for l in lines)
        res = run_cli("ctl", "--control", sock_path, "--json", "output", str(slot), "100000")
        assert res.returncode == 0 and json.loads(res.stdout)["lines"][-1] == "done printing"
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{m.pid}/status").read()).group(1))
    # 4 slots x 64 KiB of kept lines, plus the master itself (about 2.5 MB,
    # far more under ASan): before the bound it held 4 x 200 x 16 KiB.
    assert rss < 12 * 1024 + (60 * 1024 if os.environ.get("ASAN_OPTIONS") else 0), \
        f"master VmRSS {rss} KiB"

def test_ctl_output_escapes_control_characters(forkpool, chaos, run_cli, sock_path):
    """A worker's output must not drive the operator's terminal: the table
    form of `ctl output` escapes control characters; --json is untouched."""
    m, pool = start_pool(forkpool, sock_path, 1, *chaos_args(chaos, "--say", "before", "--raw-bytes"))
    wait_for(lambda: call(sock_path, "output", worker=0, lines=1)["lines"][0].endswith("end"),
             what="the raw bytes line")
    res = run_cli("ctl", "--control", sock_path, "output", "0", "2")
    assert res.returncode == 0, res
    raw = res.stdout.encode("utf-8", "surrogateescape")
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", raw), raw
    # (ctl's JSON parser ends a string at a NUL: the table shows the line
    # up to the NUL the worker printed; --json below has all of it.)
    assert raw.startswith(b"before\n") and raw.endswith(b"\\x1f\n"), raw
    assert b"\\x1b" in raw and b"\\x01" in raw and b"\\r" in raw, raw
    js = json.loads(run_cli("ctl", "--control", sock_path, "--json", "output", "0", "2").stdout)
    assert "\x1b" in js["lines"][1], js
    full = call(sock_path, "output", worker=0, lines=1)["lines"][0]
    assert full.endswith("\x1f\x00\ufffd\ufffd\ufffd(\ufffd\ufffd\ufffdend"), repr(full)


# ---------------------------------------------------------------------------
# ctl without a master, ctl usage


def test_ctl_against_a_missing_socket_exits_1_with_a_clear_message(run_cli, sock_path):
    res = run_cli("ctl", "--control", sock_path, "status")
    assert res.returncode == 1, res
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr: {res.stderr!r}"
    assert sock_path in lines[0] and "connect" in lines[0], lines[0]
    assert res.stdout == ""


def test_ctl_against_a_stale_socket_file_exits_1(run_cli, sock_path):
    # A socket file nobody listens on, as a SIGKILLed master leaves it.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path)
    s.close()
    res = run_cli("ctl", "--control", sock_path, "--json", "status")
    assert res.returncode == 1, res
    assert sock_path in res.stderr and "connect" in res.stderr, res


def test_ctl_after_the_master_exited_exits_1(forkpool, run_cli, sock_path):
    m, _ = start_pool(forkpool, sock_path, 1)
    assert m.stop() == 0
    res = run_cli("ctl", "--control", sock_path, "status")
    assert res.returncode == 1 and sock_path in res.stderr, res


def test_ctl_error_reply_exits_1_with_the_message(forkpool, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 1)
    res = run_cli("ctl", "--control", sock_path, "remove", "0")
    assert res.returncode == 1, res
    assert "last worker" in res.stderr, res
    assert wait_status_pool(sock_path, m, 1) == pool


@pytest.mark.parametrize("args", [
    [],                       # no command
    ["frobnicate"],
    ["scale"],
    ["scale", "x"],
    ["scale", "0"],
    ["scale", "2", "3"],
    ["add", "-1"],
    ["output", "0", "0"],
    ["stop", "--later"],
    ["--bogus", "status"],
], ids=lambda a: " ".join(a) or "none")
def test_ctl_usage_errors_exit_2(run_cli, sock_path, args):
    # No master runs: a usage error must be found before connecting.
    res = run_cli("ctl", "--control", sock_path, *args)
    assert res.returncode == 2, res
    assert res.stderr.strip(), res


def test_ctl_without_a_socket_path_is_a_usage_error(run_cli, monkeypatch):
    monkeypatch.delenv("FORKPOOL_CONTROL", raising=False)
    res = run_cli("ctl", "status")
    assert res.returncode == 2, res
    assert "--control" in res.stderr, res
