"""The control socket under bad, many, slow and hostile clients.

Every bad request line gets an error reply naming the problem and leaves
the connection usable; an oversized one gets an error, then a close; many
concurrent clients, over the socket and through `forkpool ctl`, are all
answered; silent, half-sent, never-reading and hung-up clients keep no
one else from being served, and a command is carried out whether or not
its reply can be delivered; at EMFILE accepting pauses without spinning;
the number of clients is bounded; another user is refused.
"""

import json
import os
import re
import shutil
import socket
import threading

import pytest

from fp.base import TIMEOUT, wait_for
from fp.control import Control, call, check_status, new_id, start_pool, wait_status_pool
from fp.net import recv_to_eof
from fp.proc import cpu_share

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
    (b'{"a":' * 4000, None, ["nested too deeply"]),                     # deep and cut
    (b'[' * 30000 + b']' * 30000, None, ["nested too deeply"]),         # deep, complete
    (bytes(range(0x80, 0x100)) + b"\x00\x01\x02\xff", None, ["UTF-8"]),  # binary garbage
    (b'{"id":"a4","cmd":"status\x00"}', None, ["NUL"]),                 # a raw NUL
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


@pytest.mark.parametrize("size,newline", [(160 * 1024 + 1, False), (1 << 20, False), (1 << 20, True)],
                         ids=["160KiB+1", "1MiB", "1MiB-line"])
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
        data = recv_to_eof(s)
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
    # The build directory may be out of the other user's reach (/root is
    # 0700 on a fresh machine): a copy of the program where it can run it.
    ctl = os.path.join(os.path.dirname(sock_path), "forkpool")
    shutil.copy(forkpool_bin, ctl)
    os.chmod(ctl, 0o755)
    for _ in range(20):
        res = subprocess.run(
            [ctl, "ctl", "--control", sock_path, "status"],
            capture_output=True, text=True, timeout=TIMEOUT,
            preexec_fn=lambda: (os.setgid(nobody.pw_gid), os.setgroups([]),
                                os.setuid(nobody.pw_uid)))
        assert res.returncode == 1, f"ctl as nobody: {res}"
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and re.search(r"permission denied|closed the connection",
                                            lines[0]), res.stderr
    m.wait_log(r"control: refused a client \(uid %d\)" % nobody.pw_uid)
    assert m.alive()
