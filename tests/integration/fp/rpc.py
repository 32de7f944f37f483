"""JSON-RPC against the built-in jsonrpc worker: a raw-socket client
reading reply lines."""

import json
import socket

from fp.base import TIMEOUT
from fp.net import Conn


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

    def read_json(self):
        """The next reply line, parsed, whatever it is (an object or a
        batch's array)."""
        return json.loads(self.read_raw())
