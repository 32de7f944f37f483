"""JSON-RPC 2.0 batches (section 6) and the specification's own examples
(section 7) against the built-in jsonrpc worker, its methods standing in
for the examples' (subtract and sum: echo; get_data: worker).  A batch is
one line in and one line out: the array of its replies, none for its
notifications, no line at all for a batch of notifications only."""

import json
import select
import signal
import time

from fp.base import build_sanitizers, report, wait_for
from fp.proc import owner_of_socket, server_side_inode, vm_kib
from fp.rpc import RpcConn
from test_jsonrpc import run_floods

MAX_BATCH = 1000
INVALID = -32600


def invalid(reply, id=None):
    assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == INVALID, reply
    assert reply["id"] == id, reply


def by_id(replies):
    out = {}
    for r in replies:
        assert r["jsonrpc"] == "2.0" and ("result" in r) != ("error" in r), r
        out.setdefault(json.dumps(r["id"]), []).append(r)
    return out


def quiet(c, seconds=0.3):
    """Nothing arrives on c within `seconds`."""
    if c.buf:
        return False
    return not select.select([c.sock], [], [], seconds)[0]


def test_the_specifications_single_examples(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        # Positional and named parameters.
        c.send_line('{"jsonrpc": "2.0", "method": "echo", "params": [42, 23], "id": 1}')
        assert c.read() == {"jsonrpc": "2.0", "result": [42, 23], "id": 1}
        c.send_line('{"jsonrpc": "2.0", "method": "echo", "params": {"subtrahend": 23, '
                    '"minuend": 42}, "id": 3}')
        assert c.read()["result"] == {"subtrahend": 23, "minuend": 42}
        # Notifications: nothing back (the next line answers the ping).
        c.send_line('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}')
        c.send_line('{"jsonrpc": "2.0", "method": "foobar"}')
        c.send_line('{"jsonrpc": "2.0", "method": "ping", "id": "p"}')
        assert c.read() == {"jsonrpc": "2.0", "result": "pong", "id": "p"}
        # A method that does not exist.
        c.send_line('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
        r = c.read()
        assert r["error"]["code"] == -32601 and r["id"] == "1", r
        # Invalid JSON, an invalid request object.
        c.send_line('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
        r = c.read()
        assert r["error"]["code"] == -32700 and r["id"] is None, r
        c.send_line('{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
        invalid(c.read())


def test_the_specifications_batch_examples(rpc):
    m, pool = rpc
    with RpcConn(m.port) as c:
        # A batch that is not valid JSON: one parse error object.
        c.send_line('[{"jsonrpc": "2.0", "method": "echo", "params": [1,2,4], "id": "1"},'
                    '{"jsonrpc": "2.0", "method"]')
        r = c.read_json()
        assert isinstance(r, dict) and r["error"]["code"] == -32700 and r["id"] is None, r
        # An empty array: one invalid-request object, not an array.
        c.send_line("[]")
        r = c.read_json()
        assert isinstance(r, dict), r
        invalid(r)
        # Not requests: one error each, in an array.
        c.send_line("[1]")
        r = c.read_json()
        assert isinstance(r, list) and len(r) == 1, r
        invalid(r[0])
        c.send_line("[1,2,3]")
        r = c.read_json()
        assert isinstance(r, list) and len(r) == 3, r
        for x in r:
            invalid(x)
        # The mixed batch.
        c.send_line(json.dumps([
            {"jsonrpc": "2.0", "method": "echo", "params": [1, 2, 4], "id": "1"},
            {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
            {"jsonrpc": "2.0", "method": "echo", "params": [42, 23], "id": "2"},
            {"foo": "boo"},
            {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
            {"jsonrpc": "2.0", "method": "worker", "id": "9"},
        ]))
        r = c.read_json()
        assert isinstance(r, list) and len(r) == 5, r
        ids = by_id(r)
        assert ids['"1"'][0]["result"] == [1, 2, 4]
        assert ids['"2"'][0]["result"] == [42, 23]
        invalid(ids["null"][0])
        assert ids['"5"'][0]["error"]["code"] == -32601
        assert ids['"9"'][0]["result"]["pid"] == pool[0]
        # Notifications only: no line at all.
        c.send_line('[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},'
                    '{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]')
        assert quiet(c)
        c.send_line('{"jsonrpc": "2.0", "method": "ping", "id": "after"}')
        assert c.read() == {"jsonrpc": "2.0", "result": "pong", "id": "after"}


def test_batch_members_count_as_requests_and_keep_their_place(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        before = c.result("worker")["requests"]
        batch = [{"jsonrpc": "2.0", "method": "ping", "id": i} for i in range(10)]
        batch.append({"jsonrpc": "2.0", "method": "ping"})  # a notification
        batch += [[], 7]  # not requests: errors, counted too
        # Pipelined around the batch: answers in the order of the lines.
        c.sock.sendall(b'{"jsonrpc":"2.0","method":"sleep","params":[200],"id":"s"}\n'
                       + json.dumps(batch).encode() + b"\n"
                       + b'{"jsonrpc":"2.0","method":"ping","id":"last"}\n'
                       + b'[{"jsonrpc":"2.0","method":"ping","id":1},'
                       + b'{"jsonrpc":"2.0","method":"ping","id":1}]\n')
        assert c.read()["id"] == "s"
        r = c.read_json()
        assert [x["id"] for x in r] == list(range(10)) + [None, None]
        assert c.read()["id"] == "last"
        # Duplicate ids are each answered.
        assert [x["id"] for x in c.read_json()] == [1, 1]
        after = c.result("worker")["requests"]
        # The sleep, 13 in the batch, "last", 2 pings, this worker call.
        assert after - before == 1 + 13 + 1 + 2 + 1, (before, after)


def test_batch_size_bound(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c:
        batch = [{"jsonrpc": "2.0", "method": "ping", "id": i} for i in range(MAX_BATCH)]
        c.send_line(json.dumps(batch))
        r = c.read_json()
        assert isinstance(r, list) and sorted(x["id"] for x in r) == list(range(MAX_BATCH))
        c.send_line(json.dumps(batch + [{"jsonrpc": "2.0", "method": "ping", "id": "x"}]))
        r = c.read_json()
        assert isinstance(r, dict), str(r)[:200]
        invalid(r)
        assert str(MAX_BATCH) in r["error"]["data"], r
        assert c.result("ping") == "pong"


def test_sleeps_in_a_batch_run_side_by_side_and_block_no_one(rpc):
    m, _ = rpc
    with RpcConn(m.port) as c, RpcConn(m.port) as other:
        assert other.result("ping") == "pong"
        t0 = time.monotonic()
        c.send_line(json.dumps([
            {"jsonrpc": "2.0", "method": "sleep", "params": [1500], "id": "s1"},
            {"jsonrpc": "2.0", "method": "ping", "id": "p"},
            {"jsonrpc": "2.0", "method": "sleep", "params": {"ms": 1500}, "id": "s2"},
            {"jsonrpc": "2.0", "method": "echo", "params": ["e"], "id": "e"},
            {"jsonrpc": "2.0", "method": "sleep", "params": [1500], "id": "s3"},
        ]))
        # Another connection is served while the batch sleeps, and the
        # batch's line has not come yet.
        assert other.result("echo", ["meanwhile"]) == ["meanwhile"]
        assert quiet(c, 0)
        r = c.read_json()
        elapsed = time.monotonic() - t0
        ids = by_id(r)
        assert set(ids) == {'"s1"', '"p"', '"s2"', '"e"', '"s3"'}, r
        assert ids['"p"'][0]["result"] == "pong" and ids['"e"'][0]["result"] == ["e"]
        assert all(ids[k][0]["result"] is True for k in ('"s1"', '"s2"', '"s3"'))
        # One after the other they would take 4.5 s.
        assert 1.4 < elapsed < 4.0, elapsed


def test_a_batch_sleeping_at_sigterm_is_answered(rpc):
    m, pool = rpc
    with RpcConn(m.port) as c:
        c.send_line(json.dumps([
            {"jsonrpc": "2.0", "method": "sleep", "params": [3000], "id": "late"},
            {"jsonrpc": "2.0", "method": "ping", "id": "p"},
        ]))
        wait_for(lambda: owner_of_socket(server_side_inode(c.sock, m.port), [pool[0]]),
                 what="the worker to accept the connection")
        m.signal(signal.SIGTERM)
        r = c.read_json()
        assert sorted(x["id"] for x in r) == ["late", "p"], r
        c.wait_eof()
    assert m.wait_exit() == 0
    m.assert_tree_gone()


def batch_line(i, members=MAX_BATCH, size=900):
    """A batch of `members` echo requests, each with a string of `size`
    bytes: a little under 1 MiB, the longest line."""
    req = '{"jsonrpc":"2.0","method":"echo","id":%d,"params":"%s"}'
    return ("[" + ",".join(req % (i * members + k, "y" * size)
                           for k in range(members)) + "]\n").encode()


def test_replies_to_batches_count_in_the_connection_bound(forkpool, capsys):
    """Two clients send batches of 1000 echo requests (about 1 MiB a line)
    behind a long sleep and read nothing: each is no longer read once its
    batches' replies pile up."""
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pid = m.wait_pool(1)[0]
    with RpcConn(m.port) as c:
        assert c.result("ping") == "pong"
    base = vm_kib(pid, "VmRSS")
    (a, sent_a), (b, sent_b) = run_floods((m.port, 8000, 300, 2.0, None, batch_line),
                                          (m.port, 8000, 300, 2.0, None, batch_line))
    try:
        peak = vm_kib(pid, "VmHWM")
        with RpcConn(m.port) as c:
            served = c.result("worker")["requests"]
        report(capsys, f"jsonrpc RSS {base / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB "
               f"under batch floods; batches sent {sent_a} + {sent_b}, requests served {served}")
        assert peak < 64 * 1024, f"peak RSS {peak} KiB (baseline {base} KiB)\n{m.describe()}"
        assert served < 100 * MAX_BATCH, f"the worker answered {served} requests"
        # Once read, every batch sent whole is answered, in order.
        reader = RpcConn.__new__(RpcConn)
        reader.sock, reader.buf = a, b""
        assert reader.read()["id"] == 0
        for i in range(1, sent_a + 1):
            r = reader.read_json()
            assert len(r) == MAX_BATCH and r[0]["id"] == i * MAX_BATCH, (i, str(r)[:200])
    finally:
        a.close()
        b.close()
    if not build_sanitizers(m.binary):
        wait_for(lambda: vm_kib(pid, "VmRSS") < base + 8 * 1024,
                 what=lambda: f"RSS back near {base} KiB (now {vm_kib(pid, 'VmRSS')} KiB)")
