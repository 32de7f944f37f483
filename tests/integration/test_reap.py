"""Which children the master reaps: its own workers only, unless it runs
as PID 1 or a child subreaper (test_container.py) or --reap-all asks for
every child.  A child the master did not start -- here one the shell
left behind before it exec'd forkpool -- is not the master's to wait for.
(tests/unit/test-reap.c: a program's own child, waited for by the
program while the pool runs.)"""

import os
import signal

from fp.base import wait_for
from fp.master import Master
from fp.net import free_port
from fp.proc import child_procs, is_zombie, proc_stat

# The shell starts a child, then becomes forkpool (same pid): the child
# is forkpool's, but forkpool never forked it.  It exits once a file
# exists, so the test says when.
SHELL = 'while [ ! -e "$FP_GO" ]; do sleep 0.01; done & exec "$0" "$@"'


def start(forkpool_bin, tmp_path, *extra):
    go = tmp_path / "go"
    os.environ["FP_GO"] = str(go)
    try:
        m = Master("/bin/sh", ["-c", SHELL, forkpool_bin, "-b", f"127.0.0.1:{free_port()}",
                               "-k", "echo", "-w", "1", "--log-level", "debug", *extra],
                   str(tmp_path))
        m.start()
    finally:
        del os.environ["FP_GO"]
    # (wait_pool() counts the master's children: the stray is one.)
    pool = {0: int(m.wait_log(r"worker 0 pid (\d+) ready").group(1))}
    stray = [p.pid for p in child_procs(m.pid) if p.pid != pool[0]]
    assert len(stray) == 1, m.describe()
    return m, pool, stray[0], go


def test_a_child_it_did_not_start_is_left_alone(forkpool_bin, tmp_path):
    m, pool, stray, go = start(forkpool_bin, tmp_path)
    try:
        go.touch()
        wait_for(lambda: is_zombie(stray), what="the stray's exit")
        # A worker's exit afterwards: the master reaps (and respawns) it,
        # and so has handled the stray's SIGCHLD too, and left it.
        os.kill(pool[0], signal.SIGKILL)
        m.wait_log(r"worker 0 pid \d+ ready", count=2)
        assert is_zombie(stray), m.describe()
        assert proc_stat(stray).ppid == m.pid
        assert not m.find(rf"reaped pid {stray}\b"), m.describe()
        assert m.stop(signal.SIGTERM) == 0
    finally:
        m.kill_all()


def test_reap_all_reaps_it(forkpool_bin, tmp_path):
    m, pool, stray, go = start(forkpool_bin, tmp_path, "--reap-all")
    try:
        m.wait_log(r"the master reaps every child, not only its workers: it is "
                   r"asked to \(reap_all\)")
        go.touch()
        m.wait_log(rf"reaped pid {stray} \(exited with status 0\)")
        wait_for(lambda: proc_stat(stray) is None, what="the stray reaped")
        assert m.stop(signal.SIGTERM) == 0
    finally:
        m.kill_all()
