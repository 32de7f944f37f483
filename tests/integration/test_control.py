"""The control socket (--control PATH) and its client `forkpool ctl`.

One JSON object per line each way; every request carries a hex "id" that
the reply echoes.  These tests talk to the socket directly (fp.control.Control)
and through `forkpool ctl`, and check what they are told against /proc
and the master's log: status lists exactly the live workers, scale /
add / remove / kill and SIGTTIN / SIGTTOU move the pool as they say,
removed workers stop gracefully, output returns what a slot printed, and
no bad, oversized, silent, half-sent or never-reading client keeps the
master from serving the others.
"""

import json
import os
import re
import signal
import socket
import stat
import threading

import pytest

from fp.base import TIMEOUT, wait_for
from fp.control import Control, call, new_id, start_pool
from fp.proc import cpu_share, is_alive, proc_stat

# ---------------------------------------------------------------------------
# Helpers


def chaos_args(chaos, *flags):
    return ["-k", chaos, "--"] + list(flags)


def check_status(m, status, pool):
    """The status result describes exactly `pool` ({slot: pid}), which
    are exactly the master's live children in /proc."""
    assert status["pid"] == m.pid
    assert status["target"] == len(pool)
    assert status["live"] == len(pool)
    assert status["reloading"] is False
    assert isinstance(status["uptime"], (int, float)) and status["uptime"] >= 0
    assert isinstance(status["restarts"], int) and status["restarts"] >= 0
    ws = status["workers"]
    assert sorted(w["id"] for w in ws) == sorted(pool), f"slots in status: {ws}"
    assert {w["id"]: w["pid"] for w in ws} == pool, f"status {ws} != pool {pool}"
    assert m.children() == set(pool.values()), (
        f"children in /proc {sorted(m.children())} != status pids {sorted(pool.values())}")
    for w in ws:
        st = proc_stat(w["pid"])
        assert st is not None and st.ppid == m.pid and st.state != "Z", (
            f"pid {w['pid']} is not a live child of the master: {st}")
        assert w["state"] == "ready", w
        assert w["role"] == "worker", w
        assert isinstance(w["uptime"], (int, float)) and w["uptime"] >= 0, w
        assert isinstance(w["heartbeat_age"], (int, float)) and w["heartbeat_age"] >= 0, w
        assert isinstance(w["restarts"], int) and w["restarts"] >= 0, w
        assert isinstance(w["requests"], int) and w["requests"] >= 0, w
        assert isinstance(w["rss_kib"], int) and w["rss_kib"] > 0, w
        assert w["last_exit"] is None or isinstance(w["last_exit"], str), w


def wait_status_pool(path, m, n):
    """Wait until both /proc and status show exactly n ready workers, the
    same ones; return {slot: pid}."""
    def settled():
        pool = m.pool_state(n)
        if pool is None:
            return None
        status = call(path, "status")
        if {w["id"]: w["pid"] for w in status["workers"]} != pool or status["target"] != n:
            return None
        if any(w["state"] != "ready" for w in status["workers"]):
            return None
        return status, pool
    status, pool = wait_for(settled, what=lambda: (
        f"status and /proc to agree on {n} ready workers "
        f"(children {sorted(m.children())})\n{m.describe()}"))
    check_status(m, status, pool)
    return pool


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


# ---------------------------------------------------------------------------
# Bad input


# (request line without its newline, the id its reply must carry, words
# the error must contain: it names the problem)
BAD = [
    (b'{"id":"a1","cmd":"status"', None, ["malformed JSON"]),           # truncated
    (b'{', None, ["malformed JSON"]),
    (b'', None, ["malformed JSON"]),                                    # empty line
    (b'status please', None, ["malformed JSON"]),
    (b'{"id":"a2","cmd":"status"} {"id":"a3"}', None, ["malformed JSON"]),  # trailing garbage
    (b'{"a":' * 4000, None, ["malformed JSON"]),                        # deep and cut
    (bytes(range(0x80, 0x100)) + b"\x00\x01\x02\xff", None, ["UTF-8"]),  # binary garbage
    (b'{"id":"a4","cmd":"status\x00"}', None, ["UTF-8"]),               # a raw NUL
    (b'[1, 2, 3]', None, ["object"]),
    (b'"status"', None, ["object"]),
    (b'{"cmd":"status"}', None, ['"id"']),                              # missing id
    (b'{"id":42,"cmd":"status"}', None, ['"id"']),
    (b'{"id":"not-hex","cmd":"status"}', None, ['"id"']),
    (b'{"id":"","cmd":"status"}', None, ['"id"']),
    (b'{"id":"' + b"a" * 65 + b'","cmd":"status"}', None, ['"id"']),
    (b'{"id":"b1"}', "b1", ['"cmd"']),                                  # missing cmd
    (b'{"id":"b2","cmd":["status"]}', "b2", ['"cmd"']),
    (b'{"id":"b3","cmd":"frobnicate"}', "b3", ["unknown command", "frobnicate"]),
    (b'{"id":"b4","cmd":"scale","workers":"x"}', "b4", ['"workers"']),
    (b'{"id":"b5","cmd":"scale"}', "b5", ['"workers"']),
    (b'{"id":"b6","cmd":"scale","workers":0}', "b6", ['"workers"']),
    (b'{"id":"b7","cmd":"scale","workers":-3}', "b7", ['"workers"']),
    (b'{"id":"b8","cmd":"scale","workers":2.5}', "b8", ['"workers"']),
    (b'{"id":"b9","cmd":"scale","workers":1e30}', "b9", ['"workers"']),
    (b'{"id":"ba","cmd":"scale","workers":true}', "ba", ['"workers"']),
    (b'{"id":"bb","cmd":"kill","worker":-1}', "bb", ['"worker"']),
    (b'{"id":"bc","cmd":"kill","worker":"0"}', "bc", ['"worker"']),
    (b'{"id":"bd","cmd":"kill","worker":0,"signal":9}', "bd", ['"signal"']),
    (b'{"id":"be","cmd":"kill","worker":0,"signal":"NOPE"}', "be", ['"signal"']),
    (b'{"id":"bf","cmd":"add","worker":null}', "bf", ['"worker"']),
    (b'{"id":"c0","cmd":"remove"}', "c0", ['"worker"']),
    (b'{"id":"c1","cmd":"output","worker":0,"lines":"all"}', "c1", ['"lines"']),
    (b'{"id":"c2","cmd":"output","worker":0,"lines":0}', "c2", ['"lines"']),
    (b'{"id":"c3","cmd":"stop","graceful":"yes"}', "c3", ['"graceful"']),  # must not stop
    (b'{"id":"C4","cmd":"add","worker":1}', "C4", ["already"]),
]


def check_bad_reply(rep, req, rid, words):
    assert rep["ok"] is False, f"{req[:80]!r} was accepted: {rep}"
    assert rep["id"] == rid, f"{req[:80]!r}: reply id {rep['id']!r}, expected {rid!r}"
    for w in words:
        assert w.lower() in rep["error"].lower(), (
            f"{req[:80]!r}: error {rep['error']!r} does not name {w!r}")
    assert "result" not in rep


def test_bad_requests_get_error_replies_and_the_connection_stays_usable(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    with Control(sock_path) as c:
        # One at a time, each followed by a good request on the same
        # connection.
        for req, rid, words in BAD:
            c.send(req + b"\n")
            check_bad_reply(c.reply(), req, rid, words)
            assert c.call("status")["live"] == 2, f"after {req[:80]!r}"
        # All at once, in one write: one reply per line, in order.
        c.send(b"".join(req + b"\n" for req, _, _ in BAD))
        for req, rid, words in BAD:
            check_bad_reply(c.reply(), req, rid, words)
        check_status(m, c.call("status"), pool)
    # Nothing was scaled, killed or stopped.
    assert m.alive()
    assert wait_status_pool(sock_path, m, 2) == pool


def test_request_just_under_the_size_limit_is_served(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    rid = new_id()
    req = {"id": rid, "cmd": "status", "pad": ""}
    req["pad"] = "x" * (60 * 1024 - len(json.dumps(req)))
    with Control(sock_path) as c:
        c.send(json.dumps(req).encode() + b"\n")
        rep = c.reply()
        assert rep["id"] == rid and rep["ok"] is True, rep
        check_status(m, rep["result"], pool)


@pytest.mark.parametrize("size,newline", [(64 * 1024 + 1, False), (1 << 20, False), (1 << 20, True)],
                         ids=["64KiB+1", "1MiB", "1MiB-line"])
def test_oversized_request_gets_an_error_then_the_connection_closes(forkpool, sock_path, size, newline):
    m, pool = start_pool(forkpool, sock_path, 2)
    data = b'{"id":"abc","cmd":"status","pad":"' + b"x" * size + b'"}' + (b"\n" if newline else b"")
    with Control(sock_path) as c, Control(sock_path) as other:
        # The master hangs up while we may still be sending: that is fine.
        sent = 0
        try:
            while sent < len(data):
                sent += c.sock.send(data[sent:sent + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        rep = c.reply()
        assert rep["ok"] is False and rep["id"] is None, rep
        assert "too large" in rep["error"], rep
        assert c.is_closed(), "the connection stays open after an oversized request"
        # The master and its other clients carry on.
        check_status(m, other.call("status"), pool)
    check_status(m, call(sock_path, "status"), pool)


# ---------------------------------------------------------------------------
# Many clients, slow clients


def test_twenty_concurrent_socket_clients_are_all_answered(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    n, rounds = 20, 10
    conns = [Control(sock_path) for _ in range(n)]
    barrier = threading.Barrier(n)
    errors, answered = [], []

    def client(i, c):
        try:
            barrier.wait(TIMEOUT)
            for r in range(rounds):
                if r % 2:
                    res = c.call("output", worker=1, lines=5)
                    assert res["worker"] == 1
                else:
                    check_status(m, c.call("status"), pool)
                answered.append(i)
        except Exception as e:  # reported below, with the client number
            errors.append(f"client {i}: {e!r}")

    try:
        threads = [threading.Thread(target=client, args=(i, c), daemon=True) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 3)
        assert not any(t.is_alive() for t in threads), "some clients never finished"
        assert not errors, errors
        assert len(answered) == n * rounds
    finally:
        for c in conns:
            c.close()


def test_twenty_concurrent_ctl_processes_all_succeed(forkpool, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    results = [None] * 20

    def one(i):
        results[i] = run_cli("ctl", "--control", sock_path, "--json", "status")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not any(t.is_alive() for t in threads)
    for i, res in enumerate(results):
        assert res is not None and res.returncode == 0, f"ctl #{i}: {res}"
        check_status(m, json.loads(res.stdout), pool)


def test_silent_and_half_line_clients_do_not_block_others(forkpool, run_cli, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    silent = [Control(sock_path) for _ in range(5)]
    half = Control(sock_path)
    try:
        rid = new_id()
        half.send(b'{"id":"' + rid.encode() + b'","cmd":"sta')
        # Others are served meanwhile, over the socket and through ctl.
        for _ in range(3):
            check_status(m, call(sock_path, "status"), pool)
        res = run_cli("ctl", "--control", sock_path, "--timeout", "10", "--json", "status")
        assert res.returncode == 0, res
        # The half line was kept: its end completes the request.
        half.send(b'tus"}\n')
        rep = half.reply()
        assert rep["id"] == rid and rep["ok"] is True, rep
        # The silent ones are still connected (not answered, not dropped).
        for c in silent:
            c.sock.setblocking(False)
            try:
                data = c.sock.recv(1)
            except BlockingIOError:
                data = None
            assert data is None, f"a silent client got {data!r}"
            c.sock.setblocking(True)
        # A graceful stop is not held up by them either.
        assert m.stop() == 0, m.describe()
        for c in silent:
            assert c.is_closed(), "a silent client was not disconnected at exit"
    finally:
        half.close()
        for c in silent:
            c.close()


def test_a_client_that_never_reads_is_dropped_without_blocking_others(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    hog = Control(sock_path)
    # ~25 MB of replies the hog never reads, far past what the master keeps:
    # it stops reading the hog's requests while their replies wait, and
    # drops it once it has read nothing for a while.
    burst = b'{"id":"1","cmd":"status"}\n' * 60000
    outcome = []

    def flood():
        try:
            hog.sock.settimeout(TIMEOUT * 2)
            hog.sock.sendall(burst)
            outcome.append("sent everything")
        except (BrokenPipeError, ConnectionResetError) as e:
            outcome.append(f"dropped ({e.__class__.__name__})")
        except Exception as e:
            outcome.append(f"error {e!r}")

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        # While the hog floods, others are served.
        for _ in range(5):
            check_status(m, call(sock_path, "status"), pool)
        m.wait_log(r"control: dropping a client that left its replies unread")
        t.join(TIMEOUT * 2)
        assert not t.is_alive(), "sending to the master blocked"
        assert outcome and not outcome[0].startswith("error"), outcome
        check_status(m, call(sock_path, "status"), pool)
        assert m.alive()
    finally:
        hog.close()
        t.join(TIMEOUT)


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


# ---------------------------------------------------------------------------
# The control plane keeps its word under hostile clients


def test_stop_is_carried_out_when_the_client_hangs_up_unread(forkpool, sock_path):
    """A stop whose client closes at once, without reading the reply, still
    stops the pool: a command is carried out whether or not its reply can
    be delivered."""
    m, pool = start_pool(forkpool, sock_path, 2)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(b'{"id":"5709","cmd":"stop"}\n')
    s.close()
    assert m.wait_exit() == 0, m.describe()
    m.find(r"control: stop \(graceful\)")
    assert not os.path.lexists(sock_path)


def test_every_request_read_gets_its_whole_reply_after_a_half_close(forkpool, sock_path):
    """Pipelined requests then shutdown(SHUT_WR): every one is answered in
    full and in order, and only then is the connection closed."""
    m, pool = start_pool(forkpool, sock_path, 8)
    ids = [f"{i:04x}" for i in range(60)]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(sock_path)
    try:
        s.sendall(b"".join(json.dumps({"id": i, "cmd": "status"}).encode() + b"\n"
                           for i in ids))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.endswith(b"\n"), f"the replies end inside a line ({len(data)} bytes)"
    replies = [json.loads(l) for l in data.splitlines()]
    assert [r["id"] for r in replies] == ids, [r["id"] for r in replies]
    assert all(r["ok"] and len(r["result"]["workers"]) == 8 for r in replies)
    assert m.alive()


def test_three_pipelined_requests_get_three_replies(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 2)
    with Control(sock_path) as c:
        c.send(b'{"id":"a","cmd":"status"}\n{"id":"b","cmd":"status"}\n'
               b'{"id":"c","cmd":"output","worker":0}\n')
        assert [c.reply()["id"] for _ in range(3)] == ["a", "b", "c"]


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


def master_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_control_socket_at_emfile_pauses_instead_of_spinning(forkpool, run_cli, sock_path):
    """The master out of file descriptors: accepting on the control socket
    pauses (one log line), no spin, and it serves again once fds free up."""
    import resource

    m, pool = start_pool(forkpool, sock_path, 1)
    limit = master_fds(m.pid) + 4
    resource.prlimit(m.pid, resource.RLIMIT_NOFILE, (limit, limit))
    held = []
    try:
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)  # queued by the kernel even when not accepted
            held.append(s)
        m.wait_log(r"accept on unix:\S+ failed; pausing accepts.*Too many open files")
        used = cpu_share(m.pid, 3)
        assert used < 0.2, f"master used {used:.0%} of a CPU at EMFILE"
        assert len(re.findall(r"pausing accepts", m.log.text())) == 1, m.describe()
        assert m.alive()
    finally:
        for s in held:
            s.close()
    # Room again: the queued connections and new ones are served.
    wait_for(lambda: run_cli("ctl", "--control", sock_path, "status").returncode == 0,
             what=lambda: f"ctl status after the fds were freed\n{m.describe()}")
    m.wait_log(r"accepting on unix:\S+ again after")


def test_the_control_socket_takes_a_bounded_number_of_clients(forkpool, sock_path):
    m, pool = start_pool(forkpool, sock_path, 1)
    held = []
    try:
        for i in range(64):
            c = Control(sock_path)
            held.append(c)
            rep = c.request("status")  # accepted and served
            assert rep["ok"], f"client {i + 1}: {rep}"
        with Control(sock_path) as extra:
            rep = extra.reply()
            assert rep["ok"] is False and "too many" in rep["error"], rep
        m.wait_log(r"control: refused a client: 64 are connected")
    finally:
        for c in held:
            c.close()
    # The master frees the clients as it sees them close: soon served again.

    def served():
        with Control(sock_path) as c:
            c.send(b'{"id":"5e","cmd":"status"}\n')
            return c.reply()["ok"]
    wait_for(served, what="status once the clients left")


def test_ctl_refused_by_the_peer_check_says_so_and_exits_1(forkpool, forkpool_bin, sock_path):
    """Another user's ctl is refused by SO_PEERCRED; it must print the
    master's reason and exit 1 whatever the timing, never die of SIGPIPE."""
    import pwd
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to run ctl as another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    m, pool = start_pool(forkpool, sock_path, 1)
    os.chmod(os.path.dirname(sock_path), 0o755)
    os.chmod(sock_path, 0o666)  # let the other user reach the peer check
    for _ in range(20):
        res = subprocess.run(
            [forkpool_bin, "ctl", "--control", sock_path, "status"],
            capture_output=True, text=True, timeout=TIMEOUT,
            preexec_fn=lambda: (os.setgid(nobody.pw_gid), os.setgroups([]),
                                os.setuid(nobody.pw_uid)))
        assert res.returncode == 1, f"ctl as nobody: {res}"
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and re.search(r"permission denied|closed the connection",
                                            lines[0]), res.stderr
    m.wait_log(r"control: refused a client \(uid %d\)" % nobody.pw_uid)
    assert m.alive()


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
