"""The built-in jsonrpc worker (workers/jsonrpc.c): JSON-RPC 2.0, one JSON
object per line each way, over a raw TCP socket."""

import json
import signal
import socket
import time

import pytest

from conftest import TIMEOUT, Conn, owner_of_socket, server_side_inode, wait_for

MAX_LINE = 1024 * 1024


class RpcConn(Conn):
    """One connection to the jsonrpc worker, reading reply lines."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.next_id = 1

    def send_line(self, line):
        if isinstance(line, str):
            line = line.encode()
        self.sock.sendall(line + b"\n")

    def send(self, method, params=None, id=None, notify=False):
        req = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            req["params"] = params
        if not notify:
            if id is None:
                id, self.next_id = self.next_id, self.next_id + 1
            req["id"] = id
        self.send_line(json.dumps(req))
        return id

    def read_raw(self):
        """The next reply line, as bytes without the newline."""
        while b"\n" not in self.buf:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"connection closed (pending {self.buf[:200]!r})")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read(self):
        raw = self.read_raw()
        reply = json.loads(raw)
        assert reply["jsonrpc"] == "2.0", raw
        assert ("result" in reply) != ("error" in reply), raw
        return reply

    def call(self, method, params=None, id=None):
        id = self.send(method, params, id)
        reply = self.read()
        assert reply["id"] == id, reply
        return reply

    def result(self, method, params=None):
        reply = self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]


@pytest.fixture
def rpc(forkpool):
    """A one-worker jsonrpc pool: (master, {slot: pid})."""
    m = forkpool("-w", "1", "-k", "jsonrpc")
    pool = m.wait_pool(1)
    yield m, pool
    if m.alive():
        assert m.stop() == 0


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
    "array": ("[1, 2]", -32600, None),
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
