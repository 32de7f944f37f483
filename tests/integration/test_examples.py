"""The example programs (examples/*.c): each one starts, does its job, and
stops cleanly on SIGTERM (exit status 0, no process left behind).

The examples are built next to the forkpool program, in the build
directory's examples/, found from $FORKPOOL_BIN (BUILD/cli/forkpool ->
BUILD/examples/NAME).  Each runs as a Master (fp.master): its stderr and
stdout go to files, and teardown SIGKILLs whatever is left of it.
"""

import http.client
import os
import pathlib
import re
import signal

import pytest

from fp.base import TIMEOUT, wait_for
from fp.logs import LOG_LINE_RE, JsonLog, LogFile
from fp.master import Master
from fp.net import free_port, port_is_free
from fp.proc import proc_stat


@pytest.fixture
def example(forkpool_bin, tmp_path):
    """Start an example: example(NAME, *args) -> Master."""
    started = []

    def start(name, *args):
        path = pathlib.Path(forkpool_bin).resolve().parent.parent / "examples" / name
        if not os.access(path, os.X_OK):
            pytest.skip(f"example {name} is not built: no executable {path} "
                        "(meson builds examples/ with the rest: ninja -C build)")
        m = Master(str(path), [str(a) for a in args], str(tmp_path), name=name)
        started.append(m)
        return m.start()

    yield start
    for m in started:
        m.kill_all()


def stop_cleanly(m):
    """SIGTERM the example's master: exit status 0, nothing left running."""
    status = m.stop()
    assert status == 0, f"exit status {status}\n{m.describe()}"
    m.assert_tree_gone()


def assert_workers_of(m, pids):
    for pid in pids:
        st = proc_stat(pid)
        assert st is not None and st.ppid == m.pid, (
            f"pid {pid} is not a child of the example (pid {m.pid}): {st}\n{m.describe()}")


# ---------------------------------------------------------------------------
# quickstart: a blocking main saying "I am here" each second


def test_quickstart_workers_say_they_are_here(example):
    m = example("quickstart")
    pool = m.wait_pool(2)
    assert_workers_of(m, pool.values())
    for slot, pid in pool.items():
        tag = re.escape(f"[worker {slot} pid {pid}] ")
        m.wait_out(rf"^{tag}worker {slot} pid {pid}: starting$")
        # Two lines each: the loop goes on, once a second.
        m.wait_out(rf"^{tag}I am here: worker {slot} pid {pid}$", count=2)
    stop_cleanly(m)
    for slot, pid in pool.items():
        assert m.find(rf"^\[worker {slot} pid {pid}\] worker {slot} pid {pid}: shutting down$",
                      stream="out"), f"no on_shutdown line of worker {slot}\n{m.describe()}"
        assert m.find(rf"\bworker {slot} pid {pid} exited with status 0\b"), m.describe()


# ---------------------------------------------------------------------------
# sockets: a socket opened by the master, served by every worker over HTTP


def http_get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_sockets_every_worker_serves_the_masters_socket(example):
    port = free_port()
    m = example("sockets", port)
    pool = m.wait_pool(2)
    assert_workers_of(m, pool.values())

    status, body = http_get(port)
    assert status == 200
    got = re.fullmatch(r"pong from #(\d+) (\d+)\n", body)
    assert got, f"unexpected body {body!r}"
    assert pool.get(int(got.group(1))) == int(got.group(2)), f"{body!r} is not from {pool}"

    # Each worker serves on its own: with the other one stopped, only it
    # can accept from the shared socket.
    for slot, pid in pool.items():
        others = [p for p in pool.values() if p != pid]
        for p in others:
            os.kill(p, signal.SIGSTOP)
        try:
            status, body = http_get(port)
        finally:
            for p in others:
                os.kill(p, signal.SIGCONT)
        assert (status, body) == (200, f"pong from #{slot} {pid}\n")

    stop_cleanly(m)
    assert port_is_free(port), f"127.0.0.1:{port} is still bound after the exit"


# ---------------------------------------------------------------------------
# logs: a master hook opens the log; worker records land in it


@pytest.mark.parametrize("fmt,level", [("json", "info"), ("text", "debug")])
def test_logs_worker_records_land_in_the_masters_file(example, tmp_path, fmt, level):
    path = tmp_path / f"pool.{fmt}.log"
    m = example("logs", path, fmt, level)
    m.switch_log(str(path))  # the master's own records go there too
    pool = m.wait_pool(2)
    assert_workers_of(m, pool.values())
    m.wait_log(rf"logging to {re.escape(str(path))}")

    if fmt == "json":
        log = JsonLog(path)

        def records(slot, pid, msg):
            return [(r["level"], r.get("fields")) for r in log.read()
                    if r["origin"] == "worker" and r.get("worker") == slot
                    and r["pid"] == pid and r["msg"] == msg]
    else:
        def records(slot, pid, msg):
            out = []
            for line in m.log.lines():
                lm = LOG_LINE_RE.match(line)
                if lm and lm.group("origin") == f"worker {slot} pid {pid}":
                    text = lm.group("msg")
                    if text == msg or text.startswith(msg + " "):
                        fields = dict(kv.split("=", 1) for kv in text[len(msg):].split())
                        out.append((lm.group("level"), fields or None))
            return out

    want = [("info", {"count": str(i), "example": "logs"}) for i in (1, 2, 3)]
    for slot, pid in pool.items():
        wait_for(lambda: len(records(slot, pid, "tick")) >= 3,
                 what=lambda: f"3 tick records of worker {slot}\n{m.describe()}")
        assert records(slot, pid, "tick") == want, m.describe()
        dmsg = "a debug record, kept at level debug only"
        if level == "debug":
            # One after each tick.
            wait_for(lambda: len(records(slot, pid, dmsg)) >= 3,
                     what=lambda: f"3 debug records of worker {slot}\n{m.describe()}")
            assert records(slot, pid, dmsg) == [("debug", None)] * 3, m.describe()
        else:
            assert records(slot, pid, dmsg) == [], f"debug records at level {level}\n{m.describe()}"
    stop_cleanly(m)


# ---------------------------------------------------------------------------
# supervisor: hooks, pidfile, stdout/stderr files, worker timeout


def test_supervisor_hooks_pidfile_output_files_and_timeout(example, tmp_path):
    pidfile = tmp_path / "supervisor.pid"
    out = tmp_path / "workers.stdout"
    err = tmp_path / "workers.stderr"
    m = example("supervisor", pidfile, out, err)
    m.worker_files += [LogFile(str(out)), LogFile(str(err))]
    pool = m.wait_pool(2)
    assert_workers_of(m, pool.values())

    # The master's on_start hook wrote the pidfile before the first fork.
    assert pidfile.read_text() == f"{m.pid}\n"
    m.wait_out(rf"^master pid {m.pid}: on_start: wrote {re.escape(str(pidfile))}$")
    # The workers' hook lines and their main's lines go to the files.
    for slot, pid in pool.items():
        tag = re.escape(f"[worker {slot} pid {pid}] ")
        wait_for(lambda: any(re.match(rf"{tag}on_start: worker {slot} is starting$", line)
                             for line in m.worker_files[0].lines()),
                 what=lambda: f"the on_start line of worker {slot} in {out}\n{m.describe()}")
        wait_for(lambda: any(re.match(rf"{tag}worker {slot}: time \d+$", line)
                             for line in m.worker_files[0].lines()),
                 what=lambda: f"a time line of worker {slot} in {out}\n{m.describe()}")

    # A worker that stops sending heartbeats (SIGSTOP) is killed after
    # cfg.worker_timeout (5 s) and its slot gets a new one.
    hung = pool[0]
    os.kill(hung, signal.SIGSTOP)
    m.wait_log(rf"\bworker 0 pid {hung}\b.*\bheartbeat\b")
    m.wait_respawn(0, hung)
    pool = m.wait_pool(2)

    stop_cleanly(m)
    assert not pidfile.exists(), "the master's on_shutdown hook did not remove the pidfile"
    assert m.find(rf"^master pid {m.pid}: on_shutdown: removed {re.escape(str(pidfile))}$",
                  stream="out"), m.describe()
    err_lines = m.worker_files[1].lines()
    for slot, pid in pool.items():
        assert f"[worker {slot} pid {pid}] on_shutdown: worker {slot} is done" in err_lines, (
            f"no on_shutdown line of worker {slot} in {err}\n{m.describe()}")


# ---------------------------------------------------------------------------
# settings: worker events and messages both ways


def test_settings_gets_every_event_and_a_reply_from_every_worker(example):
    m = example("settings", 4)
    assert m.wait_exit() == 0, m.describe()
    out = m.out.lines()  # what the program printed (its log is stderr)
    started = {int(x.group(1)): int(x.group(2)) for x in
               (re.match(r"event: worker (\d+) pid (\d+) started$", l) for l in out) if x}
    ready = {int(x.group(1)): int(x.group(2)) for x in
             (re.match(r"event: worker (\d+) pid (\d+) ready$", l) for l in out) if x}
    exited = {int(x.group(1)): int(x.group(2)) for x in
              (re.match(r"event: worker (\d+) pid (\d+) exited \(status 0\)$", l) for l in out)
              if x}
    replies = sorted(int(x.group(1)) for x in
                     (re.match(r"reply from worker (\d+): ok \1 greeting=hola$", l) for l in out)
                     if x)
    assert started == ready == exited and sorted(started) == [0, 1, 2, 3], out
    assert replies == [0, 1, 2, 3], out
    # Every event of a worker in order: started, ready, its reply, exited.
    for slot, pid in started.items():
        mine = [l for l in out if l.startswith((f"event: worker {slot} ",
                                                 f"reply from worker {slot}:"))]
        kinds = [("started" if "started" in l else "ready" if "ready" in l
                  else "exited" if "exited" in l else "reply") for l in mine]
        assert kinds == ["started", "ready", "reply", "exited"], mine
    assert "workers 4: started 4, ready 4, replies 4, exited 4" in out
    m.assert_tree_gone()
