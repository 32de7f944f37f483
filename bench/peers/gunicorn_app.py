"""The WSGI app gunicorn runs for scripts/bench: a short fixed body and an
X-Pid header naming the worker."""
import os

BODY = b"hello from gunicorn\n"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(BODY))),
                              ("X-Pid", str(os.getpid()))])
    return [BODY]
