"""Helpers of forkpool's black-box tests (tests/integration).

conftest.py keeps the pytest fixtures and hooks; everything else the tests
share lives here, one concept per module, and each test file imports what
it uses from the module that defines it:

  fp.base     the environment ($FORKPOOL_BIN, $FORKPOOL_CHAOS, the repo),
              TIMEOUT and wait_for(), report(), shorten(), compiling a
              worker module, the sanitizers of the build under test, and
              the checks of a command line that failed (CliResult)
  fp.proc     /proc readers: processes and their trees, fds, TCP sockets,
              CPU time and memory; killing a process tree or session
  fp.logs     the master's log lines: regexes, files read as they grow
              (Tail, LogFile), --log-format json parsing (JsonLog)
  fp.master   Master: one forkpool master started by a test, its logs,
              its pool, waits on both
  fp.net      ports picked at run time, client connections (Conn,
              EchoClient), echo checks, "served by this very worker"
  fp.control  the control socket: one-shot requests (control()), a
              connection (Control), a master started with one
  fp.http     HttpConn (a raw-socket HTTP/1.1 client that tells a clean
              close from a reset), http_get(), and HttpLoad, the one HTTP
              load generator of the suite

The tests drive the real binary named by $FORKPOOL_BIN (meson sets it, and
$FORKPOOL_CHAOS, the test-only chaos worker module), with the Python
standard library, /proc and 127.0.0.1 only.

Rules these helpers enforce:
- nothing sleeps for a fixed time where a condition can be polled:
  wait_for() polls every 10 ms up to a generous deadline (the suite must
  hold on a busy 2-core machine, yet finish fast when things work);
- ports are picked at run time (free_port());
- every process a test starts runs in its own session and is SIGKILLed in
  teardown together with every process of that session and every
  descendant found through /proc, whatever the test's outcome (the
  fixtures of conftest.py do this with Master.kill_all() and
  fp.proc.kill_session()).
"""
