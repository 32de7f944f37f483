"""The built-in jsonrpc worker (workers/jsonrpc.c): JSON-RPC 2.0, one JSON
object per line each way, over a raw TCP socket."""

import json
import resource
import signal
import socket
import threading
import time

import pytest

from fp.base import TIMEOUT, build_sanitizers, report, wait_for
from fp.master import accept_runs
from fp.proc import cpu_share, fd_table, owner_of_socket, server_side_inode, vm_kib
from fp.rpc import RpcConn

MAX_LINE = 1024 * 1024


def test_methods(rpc):
    m, pool = rpc
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
        value = {"a": [1, 2.5, "x\u00e9\u2603", None, True, False, {}], "b": {"c": []}}
        assert c.result("echo", value) == value
        assert c.result("echo", [1, "two", [3]]) == [1, "two", [3]]
        assert c.result("echo", "just a string") == "just a string"
        assert c.result("echo") is None
        worker = c.result("worker")
        assert worker == {"id": 0, "pid": pool[0], "requests": 6}
        assert c.result("sleep", {"ms": 20}) is True
        assert c.result("sleep", [0]) is True
        assert c.result("worker")["requests"] == 9
        # Numbers come back with their exact text.
        c.send_line('{"jsonrpc":"2.0","method":"echo","params":[1.50,1e400,-0,'
                    '123456789012345678901234567890],"id":1}')
        assert c.read_raw() == (b'{"jsonrpc":"2.0","result":[1.50,1e400,-0,'
                                b'123456789012345678901234567890],"id":1}')


@pytest.mark.parametrize("id", [7, 0, -3, 12345678901234567890, 1.25, "9f2c", "", "deadbeef", None],
                         ids=repr)
def test_ids_are_echoed(rpc, id):
    m, _ = rpc
    with RpcConn(m.port) as c:
        c.send_line(json.dumps({"jsonrpc": "2.0", "method": "ping", "id": id}))
        raw = c.read_raw()
        assert json.loads(raw) == {"jsonrpc": "2.0", "result": "pong", "id": id}
        assert raw.endswith(b'"id":' + json.dumps(id).replace(" ", "").encode() + b"}")


ERRORS = {
    # name: (line, code, id of the reply)
    "unterminated": ('{"jsonrpc":"2.0","method":"ping","id":1', -32700, None),
    "not-json": ("not json at all", -32700, None),
    "trailing-garbage": ('{"jsonrpc":"2.0","method":"ping","id":1} trailing', -32700, None),
    "empty-batch": ("[]", -32600, None),
    "string": ('"a string"', -32600, None),
    "no-jsonrpc": ('{"method":"ping","id":"9f2c"}', -32600, "9f2c"),
    "jsonrpc-1.0": ('{"jsonrpc":"1.0","method":"ping","id":2}', -32600, 2),
    "jsonrpc-number": ('{"jsonrpc":2.0,"method":"ping","id":3}', -32600, 3),
    "no-method": ('{"jsonrpc":"2.0","id":4}', -32600, 4),
    "method-array": ('{"jsonrpc":"2.0","method":["ping"],"id":5}', -32600, 5),
    "id-object": ('{"jsonrpc":"2.0","method":"ping","id":{"x":1}}', -32600, None),
    # yajl_tree cannot hold these; refused before parsing, never a crash.
    "nested-101": ('{"jsonrpc":"2.0","method":"echo","id":6,"params":'
                   + "[" * 100 + "]" * 100 + "}", -32600, None),
    "nested-500k": ("[" * 500000, -32600, None),
    "nul-escape": ('{"jsonrpc":"2.0","method":"echo","params":"a\\u0000b","id":7}',
                   -32600, None),
    # yajl decodes it into bytes that are not UTF-8: no reply could echo it.
    "lone-surrogate": ('{"jsonrpc":"2.0","method":"echo","params":"a\\udddd","id":8}',
                       -32600, None),
    "lone-surrogate-key": ('{"jsonrpc":"2.0","method":"echo","params":{"\\udc00":1},"id":8}',
                           -32600, None),
    # A high surrogate not followed by a low one: yajl made "?" of it, or
    # with the next escape a character never sent ("\ud800\u0041" was
    # U+10041).  Refused as a lone low one is.
    "lone-high-surrogate": ('{"jsonrpc":"2.0","method":"echo","params":"\\ud800","id":8}',
                            -32600, None),
    "high-surrogate-then-A": ('{"jsonrpc":"2.0","method":"echo","params":"\\ud800\\u0041","id":8}',
                              -32600, None),
    "high-surrogate-at-end": ('{"jsonrpc":"2.0","method":"echo","params":["ok","x\\udbff"],"id":8}',
                              -32600, None),
    "high-surrogate-upper": ('{"jsonrpc":"2.0","method":"echo","params":"\\uD83Dx","id":8}',
                             -32600, None),
    "two-high-surrogates": ('{"jsonrpc":"2.0","method":"echo","params":"\\ud83d\\ud83d","id":8}',
                            -32600, None),
    "high-surrogate-then-newline": ('{"jsonrpc":"2.0","method":"echo","params":"\\ud83d\\n","id":8}',
                                    -32600, None),
    "low-before-high": ('{"jsonrpc":"2.0","method":"echo","params":"\\ude00\\ud83d","id":8}',
                        -32600, None),
    "lone-high-surrogate-key": ('{"jsonrpc":"2.0","method":"echo","params":{"k\\udbff":1},"id":8}',
                                -32600, None),
    "unknown-method": ('{"jsonrpc":"2.0","method":"pong","id":6}', -32601, 6),
    "method-case": ('{"jsonrpc":"2.0","method":"PING","id":"a1"}', -32601, "a1"),
    "sleep-no-params": ('{"jsonrpc":"2.0","method":"sleep","id":7}', -32602, 7),
    "sleep-negative": ('{"jsonrpc":"2.0","method":"sleep","params":{"ms":-1},"id":8}', -32602, 8),
    "sleep-too-long": ('{"jsonrpc":"2.0","method":"sleep","params":{"ms":60001},"id":9}',
                       -32602, 9),
    "sleep-string": ('{"jsonrpc":"2.0","method":"sleep","params":{"ms":"5"},"id":10}',
                     -32602, 10),
    "sleep-fraction": ('{"jsonrpc":"2.0","method":"sleep","params":[1.5],"id":11}', -32602, 11),
    "sleep-two-args": ('{"jsonrpc":"2.0","method":"sleep","params":[1,2],"id":12}', -32602, 12),
}


def test_strings_are_unicode_both_ways(rpc):
    """A surrogate pair's escape is echoed as the character; raw bytes that
    are not UTF-8 are refused, as a lone surrogate's escape is (ERRORS), so
    that every reply is UTF-8 JSON text."""
    m, _ = rpc
    with RpcConn(m.port) as c:
        c.send_line('{"jsonrpc":"2.0","method":"echo","params":["a\\ud83d\\ude00"],"id":1}')
        raw = c.read_raw()
        assert raw == '{"jsonrpc":"2.0","result":["a\U0001F600"],"id":1}'.encode()
        # Hex digits of either case; pairs back to back and at the end.
        c.send_line('{"jsonrpc":"2.0","method":"echo","params":'
                    '["\\uD83D\\uDE00\\udbff\\udfff","\\ud800\\udc00"],"id":1}')
        assert c.read()["result"] == ["\U0001F600\U0010FFFF", "\U00010000"]
        # An escaped backslash before "ud800" is no escape of a surrogate.
        c.send_line('{"jsonrpc":"2.0","method":"echo","params":"\\\\ud800\\\\","id":1}')
        assert c.read()["result"] == "\\ud800\\"
        for bad in (b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"):
            c.send_line(b'{"jsonrpc":"2.0","method":"echo","params":"' + bad + b'","id":2}')
            raw = c.read_raw()
            reply = json.loads(raw)  # UTF-8 text, or this raises
            assert reply["error"]["code"] == -32600 and reply["id"] is None, (bad, reply)
        assert c.result("ping") == "pong"


@pytest.mark.parametrize("name", ERRORS)
def test_errors_leave_the_connection_usable(rpc, name):
    line, code, id = ERRORS[name]
    m, _ = rpc
    with RpcConn(m.port) as c:
        c.send_line(line)
        reply = c.read()
        assert "error" in reply, reply
        assert reply["error"]["code"] == code, reply
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
        assert reply["id"] == id, reply
        # The same connection goes on.
        assert c.result("ping") == "pong"


def test_notifications_get_no_reply(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        c.send("ping", notify=True)
        c.send("no-such-method", notify=True)
        c.send("sleep", [10], notify=True)
        c.send_line("")  # a blank line is no request either
        # The next line read answers the request after them: nothing came
        # for the notifications.
        reply = c.call("echo", ["after"], id="x1")
        assert reply["result"] == ["after"]


def test_replies_keep_the_order_of_requests(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        # One write: a slow sleep, then quick requests.
        c.sock.sendall(b'{"jsonrpc":"2.0","method":"sleep","params":{"ms":500},"id":"slow"}\n'
                       b'{"jsonrpc":"2.0","method":"ping","id":"fast"}\n'
                       b'{"jsonrpc":"2.0","method":"nope","id":"err"}\n'
                       b'{"jsonrpc":"2.0","method":"sleep","params":[0],"id":"zero"}\n')
        ids = [c.read()["id"] for _ in range(4)]
        assert ids == ["slow", "fast", "err", "zero"]


def test_a_line_of_the_limit_is_served_and_a_longer_one_closes(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        head = '{"jsonrpc":"2.0","method":"echo","id":1,"params":"'
        pad = MAX_LINE - len(head) - 2
        c.send_line(head + "x" * pad + '"}')
        assert c.read()["result"] == "x" * pad
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
        c.sock.sendall(b"x" * (MAX_LINE + 1) + b"\n")
        reply = c.read()
        assert reply["error"]["code"] == -32600
        assert reply["error"]["message"] == "request too large"
        assert reply["id"] is None
        c.wait_eof()
    # The same from a client that half-closes after its last byte.
    with RpcConn(m.port) as c:
        c.send("sleep", [100], id="first")
        c.sock.sendall(b"y" * (MAX_LINE + 1))
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read()["id"] == "first"
        assert c.read()["error"]["message"] == "request too large"
        c.wait_eof()
    # The worker is fine.
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"


def test_half_closed_client_gets_its_answers(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        c.send("sleep", [200], id=1)
        c.send("ping", id=2)
        c.sock.shutdown(socket.SHUT_WR)
        assert [c.read()["id"] for _ in range(2)] == [1, 2]
        c.wait_eof()


def test_sleep_in_flight_during_sigterm_completes(rpc):
    m, pool = rpc
    with RpcConn(m.port) as c, RpcConn(m.port) as idle:
        assert idle.result("ping") == "pong"
        t0 = time.monotonic()
        c.send("sleep", {"ms": 5000}, id="late")
        wait_for(lambda: owner_of_socket(server_side_inode(c.sock, m.port), [pool[0]]),
                 what="the worker to accept the connection")
        m.signal(signal.SIGTERM)
        assert time.monotonic() - t0 < 4.5, (
            "the test took too long to send SIGTERM: the sleep would not be in flight")
        reply = c.read()
        assert reply == {"jsonrpc": "2.0", "result": True, "id": "late"}
        # Once idle for the grace, each connection is closed cleanly.
        c.wait_eof()
        idle.wait_eof()
    assert m.wait_exit() == 0
    m.wait_log(rf"worker 0 pid {pool[0]} exited with status 0\b", need_alive=False)
    m.assert_tree_gone()


# ---------------------------------------------------------------------------
# Accepting when out of file descriptors


def test_out_of_fds_pauses_accepting_and_says_so_once(forkpool, capsys):
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pid = m.wait_pool(1)[0]
    # Leave the worker two descriptors above its highest (and the holes).
    fds = fd_table(pid)
    limit = max(fds) + 3
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    held = []
    try:
        for _ in range(limit - len(fds)):
            held.append(RpcConn(m.port))
            assert held[-1].result("ping") == "pong"
        extra = RpcConn(m.port)  # queued: no descriptor left to take it
        held.append(extra)
        extra.send("ping", id="queued")
        m.wait_log(rf"worker 0 pid {pid}: .*accept.* failed")
        used = cpu_share(pid, 2.0)
        report(capsys, f"jsonrpc worker out of fds: {used * 100:.1f} % of a core over 2 s")
        assert used < 0.2, f"{used * 100:.0f} % of a core while out of fds\n{m.describe()}"
        # The run of failures is logged once, not at every retry.
        assert accept_runs(m, pid) == ["pause"], m.describe()
        for c in held[:-1]:
            c.close()
        assert extra.read() == {"jsonrpc": "2.0", "result": "pong", "id": "queued"}
        m.wait_log(rf"worker 0 pid {pid}: accepting on \S+ again after")
        with RpcConn(m.port) as c:
            assert c.result("ping") == "pong"
        # One line when the run began, one when it ended.  (The accept
        # that takes the last free descriptor can be followed by one that
        # fails, with nothing queued: Linux allocates the descriptor
        # before it looks at the queue.  That is a run of its own.)
        assert accept_runs(m, pid)[:2] == ["pause", "resume"], m.describe()
    finally:
        for c in held:
            c.close()


# ---------------------------------------------------------------------------
# Memory under abuse

MIB = 1024 * 1024


def echo_line(id, size=MAX_LINE):
    """An echo request of exactly `size` bytes (newline excluded)."""
    head = '{"jsonrpc":"2.0","method":"echo","id":%d,"params":"' % id
    return (head + "x" * (size - len(head) - 2) + '"}\n').encode()


def flood(port, sleep_ms, count, stall=2.0, rcvbuf=None, line=echo_line):
    """A client that asks for a sleep (unless sleep_ms is None), then sends
    `count` lines `line(i)` (by default echo requests of the largest size)
    and reads nothing.  It stops
    once a send makes no progress for `stall` s (the worker no longer
    reads it).  Returns (socket, number of requests sent whole)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", port))
    s.settimeout(stall)
    sent = 0
    try:
        if sleep_ms is not None:
            s.sendall(b'{"jsonrpc":"2.0","method":"sleep","params":[%d],"id":0}\n' % sleep_ms)
        for i in range(1, count + 1):
            s.sendall(line(i))
            sent = i
    except socket.timeout:
        pass
    s.settimeout(TIMEOUT)
    return s, sent


def run_floods(*floods):
    """Run flood(*args) for each args tuple at once; their results."""
    results = [None] * len(floods)

    def one(i, args):
        results[i] = flood(*args)
    threads = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(floods)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not any(t.is_alive() for t in threads), "a flooding client never finished"
    assert all(results), "a flooding client failed"
    return results


def test_replies_waiting_behind_a_sleep_are_bounded_in_bytes(forkpool, capsys):
    """The reproduction: a long sleep, then 400 echo requests of 1 MiB,
    and no read, on two connections.  The worker held every reply (1.7 ->
    807 MiB); now each connection is no longer read once its replies pile
    up, and the memory is given back when the connections close."""
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pid = m.wait_pool(1)[0]
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
    base = vm_kib(pid, "VmRSS")
    (a, sent_a), (b, sent_b) = run_floods((m.port, 8000, 400), (m.port, 8000, 400))
    try:
        peak = vm_kib(pid, "VmHWM")
        # The worker still serves others, and read only part of the flood.
        with RpcConn(m.port) as c:
            served = c.result("worker")["requests"]
        report(capsys, f"jsonrpc RSS {base / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB "
               f"under the flood; requests sent {sent_a} + {sent_b}, served {served}")
        assert peak < 64 * 1024, (
            f"peak RSS {peak} KiB (baseline {base} KiB) while two clients flood\n{m.describe()}")
        assert served < 100, f"the worker answered {served} requests: it read the whole flood"
        # Replies in request order once the client reads: the sleep, then
        # every echo sent whole.
        reader = RpcConn.__new__(RpcConn)
        reader.sock, reader.buf = a, b""
        assert reader.read()["id"] == 0
        for i in range(1, sent_a + 1):
            reply = reader.read()
            assert reply["id"] == i and len(reply["result"]) > MAX_LINE - 100, reply["id"]
    finally:
        a.close()
        b.close()
    if build_sanitizers(m.binary):
        return  # a sanitizer's allocator keeps freed memory in quarantine
    wait_for(lambda: vm_kib(pid, "VmRSS") < base + 8 * 1024,
             what=lambda: f"RSS back near {base} KiB (now {vm_kib(pid, 'VmRSS')} KiB)")
    report(capsys, f"jsonrpc RSS {vm_kib(pid, 'VmRSS') / 1024:.1f} MiB after the clients closed")


def test_all_connections_together_are_bounded(forkpool, capsys):
    """Many clients that send big requests and read nothing: past 64 MiB
    held in all, the worker reads none that has replies waiting, yet
    answers a client with nothing waiting; when the floods go, it reads
    every connection again and gives the memory back."""
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pid = m.wait_pool(1)[0]
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
    base = vm_kib(pid, "VmRSS")
    # The sleep keeps the replies in the worker (queued behind it), not
    # in the kernel's buffers; 40 clients, each with 2 MiB of replies
    # queued before it is no longer read, pass 64 MiB.
    socks = [s for s, _ in run_floods(*[(m.port, 10000, 3)] * 40)]
    try:
        m.wait_log(rf"worker 0 pid {pid}: jsonrpc: connections hold \d+ MiB; not reading")
        with RpcConn(m.port) as c:
            assert c.result("ping") == "pong"
            assert c.result("echo", "x" * 1000) == "x" * 1000
        peak = vm_kib(pid, "VmHWM")
        report(capsys, f"jsonrpc RSS {base / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB "
               f"with {len(socks)} clients that read nothing")
        if not build_sanitizers(m.binary):
            # 64 MiB, plus what each connection had read when the worker
            # went over, plus the allocator's share.
            assert peak < 128 * 1024, f"peak RSS {peak} KiB\n{m.describe()}"
    finally:
        for s in socks:
            s.close()
    m.wait_log(rf"worker 0 pid {pid}: jsonrpc: connections hold \d+ MiB; reading every")
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
    if not build_sanitizers(m.binary):
        wait_for(lambda: vm_kib(pid, "VmRSS") < base + 8 * 1024,
                 what=lambda: f"RSS back near {base} KiB (now {vm_kib(pid, 'VmRSS')} KiB)")


def test_input_is_read_only_up_to_a_line(forkpool, capsys):
    """A client that sends without newline is refused past RPC_MAX_LINE,
    however fast it sends: the worker does not buffer its flood."""
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pid = m.wait_pool(1)[0]
    with RpcConn(m.port) as c:
        c.sock.settimeout(2.0)
        try:
            for _ in range(64):
                c.sock.sendall(b"x" * MIB)
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
        c.sock.settimeout(TIMEOUT)
        reply = c.read()
        assert reply["error"]["message"] == "request too large", reply
    peak = vm_kib(pid, "VmHWM")
    report(capsys, f"jsonrpc peak RSS {peak / 1024:.1f} MiB under 64 MiB sent without newline")
    # (A sanitizer's allocator keeps what is freed in quarantine: every
    # buffer read and dropped would count.)
    if not build_sanitizers(m.binary):
        assert peak < 32 * 1024, f"peak RSS {peak} KiB\n{m.describe()}"
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"


# ---------------------------------------------------------------------------
# Idle timeouts


def closed_by_worker(sock, port, inode):
    """The worker no longer holds the accepted socket `inode`."""
    return server_side_inode(sock, port) != inode


def test_idle_connections_are_closed_busy_ones_are_not(forkpool):
    m = forkpool("-w", "1", "-k", "jsonrpc", "--", "--idle-timeout", "1s")
    m.wait_pool(1)
    # Sends nothing at all.
    with RpcConn(m.port) as c:
        t0 = time.monotonic()
        c.wait_eof()
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 1 + TIMEOUT / 2, f"closed after {waited:.3f} s"
    # Answered, then idle.
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
        c.wait_eof()
    # Half a line, then nothing: idle too.
    with RpcConn(m.port) as c:
        c.sock.sendall(b'{"jsonrpc":"2.0",')
        c.wait_eof()
    # A request every 0.3 s for three timeouts: never idle for 1 s.
    with RpcConn(m.port) as c:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            assert c.result("ping") == "pong"
            time.sleep(0.3)  # pacing the client
        assert c.result("ping") == "pong"
    # Waiting for a sleep longer than the timeout is not idle.
    with RpcConn(m.port) as c:
        c.send("sleep", [2500], id="long")
        c.send("ping", id="after")
        assert c.read()["id"] == "long"
        assert c.read()["id"] == "after"
        c.wait_eof()


def test_client_that_reads_nothing_is_closed(forkpool):
    m = forkpool("-w", "1", "-k", "jsonrpc", "--", "--idle-timeout", "1s")
    m.wait_pool(1)
    s, _ = flood(m.port, None, 8, stall=0.5, rcvbuf=4096)
    with s:
        inode = wait_for(lambda: server_side_inode(s, m.port), what="the accepted socket")
        wait_for(lambda: closed_by_worker(s, m.port, inode),
                 what=lambda: f"the worker to close a client that reads nothing\n{m.describe()}")
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"


def test_sigterm_grace_is_kept_with_a_long_idle_timeout(forkpool):
    m = forkpool("-w", "1", "-k", "jsonrpc", "--", "--idle-timeout", "5m")
    pid = m.wait_pool(1)[0]
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        c.wait_eof()
        assert time.monotonic() - t0 < TIMEOUT / 2
    assert m.wait_exit() == 0
    m.wait_log(rf"worker 0 pid {pid} exited with status 0\b", need_alive=False)


@pytest.mark.parametrize("args, why", [
    (["--idle-timeout", "soon"], r"--idle-timeout 'soon': not a duration"),
    (["--idle-timeout", "0s"], r"--idle-timeout '0s': out of range"),
    (["--idle-timeout=2w"], r"--idle-timeout '2w': "),
    (["--idle-timeout"], r"--idle-timeout needs a value"),
    (["--idle-timeout", "1", "extra"], r"unknown worker argument 'extra'"),
], ids=["word", "zero", "unit", "missing", "extra"])
def test_bad_worker_argument_fails_the_start(forkpool, args, why):
    m = forkpool("-w", "1", "-k", "jsonrpc", "--", *args)
    first = m.wait_log(rf"worker 0 pid (\d+): jsonrpc: {why}")
    pid = int(first.group(1))
    m.wait_log(rf"worker 0 pid {pid} exited with status 3\b")
    assert len(m.find(rf"worker 0 pid {pid}: jsonrpc: ")) == 1, m.describe()
    assert not m.find(r"worker 0 pid \d+ ready"), m.describe()
