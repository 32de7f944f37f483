#!/usr/bin/env python3
"""A forkpool -k exec worker in Python: the socket is fd 3 (LISTEN_FDS=1).

    forkpool -w 4 -b 127.0.0.1:8080 --exec-type notify -k exec -- python3 hello.py
"""
import os
import socket

listener = socket.socket(fileno=3)  # handed over by forkpool, blocking

# Optional (--exec-type notify): say READY=1 once ready to serve.
if os.environ.get("NOTIFY_SOCKET"):
    addr = os.environ["NOTIFY_SOCKET"].replace("@", "\0", 1)
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)

while True:
    conn, _ = listener.accept()
    conn.recv(65536)
    body = b"hello from worker %s pid %d\n" % (
        os.environ["FORKPOOL_WORKER_ID"].encode(), os.getpid())
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))
    conn.close()
