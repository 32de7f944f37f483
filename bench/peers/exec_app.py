"""The WSGI app of gunicorn_app.py, served by a forkpool -k exec worker
(--exec-type notify) with the standard library: the listener from fd 3,
READY=1 once serving, WATCHDOG=1 from a thread.  One request per
connection, as gunicorn's sync workers answer.

SIGTERM is a graceful stop: the handler only sets a flag, and accept()
on the (blocking) listener gives up every 200 ms (SO_RCVTIMEO, the same
for every worker of the pool, unlike O_NONBLOCK it needs no polling) so
the loop sees it; a request accepted is always answered."""
import os
import signal
import socket
import struct
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunicorn_app import app  # noqa: E402


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class FromFd3(WSGIServer):
    def server_bind(self):
        self.socket = socket.socket(fileno=3)  # blocking, as handed over
        self.server_address = self.socket.getsockname()
        self.setup_environ_from_address()

    def setup_environ_from_address(self):
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]
        self.setup_environ()

    def server_activate(self):
        pass  # already listening


def notifier():
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return lambda msg: None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = addr.replace("@", "\0", 1)
    return lambda msg: s.sendto(msg, addr)


STOPPING = []


def main():
    signal.signal(signal.SIGTERM, lambda *a: STOPPING.append(1))
    tell = notifier()
    srv = FromFd3(("127.0.0.1", 0), Quiet, bind_and_activate=True)
    srv.set_app(app)
    period = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6

    def ping():
        while True:
            time.sleep(period)
            tell(b"WATCHDOG=1")
    if period > 0:
        threading.Thread(target=ping, daemon=True).start()
    lst = srv.socket
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                   struct.pack("ll", 0, 200000))
    tell(b"READY=1")
    while not STOPPING:
        try:
            conn, addr = lst.accept()
        except (BlockingIOError, InterruptedError):
            continue
        # Accepted sockets inherit the listener's SO_RCVTIMEO.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        struct.pack("ll", 0, 0))
        try:
            srv.process_request(conn, addr)
        except Exception:
            srv.handle_error(conn, addr)
            srv.shutdown_request(conn)
    tell(b"STOPPING=1")


main()
