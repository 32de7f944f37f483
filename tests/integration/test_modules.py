"""Worker modules are loaded by each worker, after fork: a rolling reload
runs the file on disk now (deployed by renaming a new file over the
path), the master never maps it, and a file that cannot be loaded is
refused -- at start with exit status 2, on reload with the old workers
serving on -- after a check in a throw-away process.  --preload keeps the
old way (the master loads it once); --check runs the start's checks alone.
"""

import os
import re
import signal

import pytest

from fp.base import assert_one_line_error, build_module, wait_for
from fp.control import Control, call, control_status, start_pool
from fp.proc import is_alive

# A worker that says which version of the file it runs, in every worker
# (its on_start fails when built with FAIL_START).
VERSIONED = r"""
#include <forkpool.h>

static int versioned_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	fpool_log(FPOOL_LOG_INFO, "module version %d in worker %u", VERSION,
		  fpool_worker_id(w));
	return FAIL_START;
}

static int versioned_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w);
}

static const struct fpool_worker_def versioned = {
	.name = "versioned",
	.on_start = versioned_start,
	.main = versioned_main,
};
FPOOL_WORKER_MODULE(versioned);
"""

NO_SYMBOL = ("#include <forkpool.h>\n"
             "FPOOL_EXPORT const unsigned fpool_worker_module_abi = FPOOL_ABI_VERSION;\n")

# Built without FPOOL_WORKER_MODULE(): the definition, but no ABI stamp.
UNSTAMPED = """
#include <forkpool.h>
static int unstamped_main(struct fpool_worker *w, void *arg) { (void)w; (void)arg; return 0; }
static const struct fpool_worker_def def = { .name = "u", .main = unstamped_main };
FPOOL_EXPORT const struct fpool_worker_def *fpool_worker_module = &def;
"""

# Stamped with an ABI number this forkpool is not.
WRONG_ABI = """
#include <forkpool.h>
static int wrong_main(struct fpool_worker *w, void *arg) { (void)w; (void)arg; return 0; }
static const struct fpool_worker_def def = { .name = "u", .main = wrong_main };
FPOOL_EXPORT const unsigned fpool_worker_module_abi = FPOOL_ABI_VERSION + 1;
FPOOL_EXPORT const struct fpool_worker_def *fpool_worker_module = &def;
"""


def versioned(tmp_path, version, fail_start=False):
    src = (f"#define VERSION {version}\n#define FAIL_START {-1 if fail_start else 0}\n"
           + VERSIONED)
    return build_module(tmp_path, f"v{version}{'f' if fail_start else ''}", src)


def deploy(src, dest):
    """Write a new file beside `dest` and rename it over: what the README
    says to do (the workers that map the old file keep it)."""
    tmp = f"{dest}.new"
    with open(src, "rb") as f, open(tmp, "wb") as g:
        g.write(f.read())
    os.rename(tmp, dest)


def versions(m, pids):
    """{pid: version} from the log for the workers `pids` ({slot: pid})."""
    out = {}
    for slot, pid in pids.items():
        line = m.wait_log(rf"worker {slot} pid {pid}: module version (\d+) in worker {slot}$")
        out[pid] = int(line.group(1))
    return out


def maps_of(pid):
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def reload_and_wait(m, sock, how, old):
    """Reload by `how`, wait until every slot of `old` has a new ready
    worker and the reload completed; the new {slot: pid}."""
    done = len(m.find(r"reload complete$"))
    if how == "SIGHUP":
        m.signal(signal.SIGHUP)
    else:
        assert call(sock, "reload") is True
    m.wait_log(r"reload complete$", count=done + 1)
    new = m.wait_pool(len(old))
    assert not set(new.values()) & set(old.values()), f"{old} -> {new}"
    return new


@pytest.mark.parametrize("how", ["SIGHUP", "ctl"])
def test_reload_runs_the_module_renamed_over_the_path(forkpool, tmp_path, how):
    app = str(tmp_path / "app.so")
    deploy(versioned(tmp_path, 1), app)
    v2 = versioned(tmp_path, 2)
    sock = str(tmp_path / "ctl.sock")
    m, pool = start_pool(forkpool, sock, 2, worker=app)
    assert set(versions(m, pool).values()) == {1}
    assert "app.so" not in maps_of(m.pid), "the master mapped the worker module"

    deploy(v2, app)
    new = reload_and_wait(m, sock, how, pool)
    assert set(versions(m, new).values()) == {2}, m.describe()
    assert "app.so" not in maps_of(m.pid)
    # The workers map the file they loaded (the new inode), not the master.
    for pid in new.values():
        assert "app.so" in maps_of(pid)


def test_a_respawned_worker_loads_the_file_on_disk(forkpool, tmp_path):
    """No reload: a worker that dies is replaced by one that loads the
    module anew (like gunicorn without --preload)."""
    app = str(tmp_path / "app.so")
    deploy(versioned(tmp_path, 1), app)
    m = forkpool("-w", "1", "--min-uptime", "0.1", worker=app)
    pool = m.wait_pool(1)
    assert versions(m, pool) == {pool[0]: 1}
    deploy(versioned(tmp_path, 2), app)
    os.kill(pool[0], signal.SIGKILL)
    pid = m.wait_respawn(0, pool[0])
    assert versions(m, {0: pid}) == {pid: 2}


BROKEN = {
    "not-elf": (lambda tmp: _write(tmp / "junk.so", b"this is not a shared object\n"),
                r"cannot load the worker module: .*app\.so"),
    "no-symbol": (lambda tmp: build_module(tmp, "nosym", NO_SYMBOL),
                  r"app\.so is not a forkpool worker module: no symbol fpool_worker_module"),
    "missing": (None, r"worker module .*app\.so: No such file or directory"),
    "no-stamp": (lambda tmp: build_module(tmp, "unstamped", UNSTAMPED),
                 r"app\.so is not a forkpool worker module of this version: "
                 r"no ABI stamp \(symbol fpool_worker_module_abi\); rebuild it"),
    "wrong-abi": (lambda tmp: build_module(tmp, "wrongabi", WRONG_ABI),
                  r"app\.so was built for forkpool ABI \d+, this is ABI \d+ "
                  r"\(forkpool [0-9.]+\): rebuild it"),
}


def _write(path, data):
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_reload_of_an_unloadable_module_is_refused(forkpool, tmp_path, kind):
    make, why = BROKEN[kind]
    app = str(tmp_path / "app.so")
    deploy(versioned(tmp_path, 1), app)
    sock = str(tmp_path / "ctl.sock")
    m, pool = start_pool(forkpool, sock, 2, worker=app)
    versions(m, pool)
    if make is None:
        os.unlink(app)
    else:
        deploy(make(tmp_path), app)

    # ctl's answer says why; so does the log, once per refusal.
    with Control(sock) as c:
        rep = c.request("reload")
    assert rep["ok"] is False and re.search(why, rep["error"]), rep
    m.wait_log(r"reload refused: .*" + why)
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload refused: .*" + why, count=2)
    # The old workers serve on: same pids, nothing started.
    st = control_status(sock)
    assert not st["reloading"]
    assert sorted(w["pid"] for w in st["workers"]) == sorted(pool.values())
    assert all(is_alive(p) for p in pool.values())
    assert not m.find(r"reload: rolling"), m.describe()

    # A good file again: the next reload goes through.
    deploy(versioned(tmp_path, 3), app)
    new = reload_and_wait(m, sock, "ctl", pool)
    assert set(versions(m, new).values()) == {3}


def test_a_module_whose_on_start_fails_aborts_the_reload(forkpool, tmp_path):
    app = str(tmp_path / "app.so")
    deploy(versioned(tmp_path, 1), app)
    sock = str(tmp_path / "ctl.sock")
    m, pool = start_pool(forkpool, sock, 2, worker=app)
    versions(m, pool)
    deploy(versioned(tmp_path, 2, fail_start=True), app)
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload aborted")
    wait_for(lambda: not control_status(sock)["reloading"], what="the reload to end")
    assert m.wait_pool(2) == pool
    assert all(is_alive(p) for p in pool.values())


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_start_with_an_unloadable_module_is_a_usage_error(run_cli, tmp_path, kind):
    make, why = BROKEN[kind]
    app = str(tmp_path / "app.so")
    if make is not None:
        deploy(make(tmp_path), app)
    res = run_cli("-w", "1", "-b", "127.0.0.1:0", "-k", app)
    assert_one_line_error(res, "--worker")
    assert re.search(why, res.stderr), res.stderr
    assert "listening" not in res.stderr, "bound before the module was checked"
    res = run_cli("--check", "-k", app)
    assert_one_line_error(res, "--worker")
    assert res.stdout == ""


def test_check_accepts_a_usable_configuration(run_cli, tmp_path):
    app = versioned(tmp_path, 1)
    res = run_cli("--check", "-w", "3", "-k", app, "-b", "127.0.0.1:1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and "usable" in res.stdout, res.stdout
    # It loaded the module in a test process, bound nothing, forked no worker.
    assert "module version" not in res.stderr and "listening" not in res.stderr


def test_preload_loads_the_module_once_in_the_master(forkpool, tmp_path):
    app = str(tmp_path / "app.so")
    deploy(versioned(tmp_path, 1), app)
    sock = str(tmp_path / "ctl.sock")
    m, pool = start_pool(forkpool, sock, 2, "--preload", worker=app)
    assert "app.so" in maps_of(m.pid)
    versions(m, pool)
    deploy(versioned(tmp_path, 2), app)
    new = reload_and_wait(m, sock, "SIGHUP", pool)
    # The workers inherit the master's copy: still version 1.
    assert set(versions(m, new).values()) == {1}


def test_a_symlinked_module_is_resolved_at_each_reload(forkpool, tmp_path):
    """The path is resolved once per generation: after the link is
    flipped, the reload's workers all run the new target, and the log
    names the file each generation resolved to."""
    v1, v2 = versioned(tmp_path, 1), versioned(tmp_path, 2)
    link = tmp_path / "current.so"
    link.symlink_to(v1)
    sock = str(tmp_path / "ctl.sock")
    m, pool = start_pool(forkpool, sock, 3, worker=str(link))
    m.wait_log(re.escape(f"starting 3 workers ({os.path.realpath(v1)})"))
    tmp = tmp_path / "current.so.new"
    tmp.symlink_to(v2)
    os.rename(tmp, link)
    new = reload_and_wait(m, sock, "SIGHUP", pool)
    assert set(versions(m, new).values()) == {2}


def test_the_workers_load_the_module_as_their_user(run_cli, forkpool, tmp_path):
    """A module the workers' user cannot read is refused at start, and
    the message says as whom it was loaded; --preload loads it in the
    master (as root) instead."""
    if os.geteuid() != 0:
        pytest.skip("--user needs root")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    app = str(private / "app.so")
    deploy(versioned(tmp_path, 1), app)
    res = run_cli("-w", "1", "-b", "127.0.0.1:0", "--user", "nobody", "-k", app)
    assert_one_line_error(res, "--worker")
    assert "Permission denied" in res.stderr and "as the workers' user nobody" in res.stderr, \
        res.stderr
    m = forkpool("-w", "1", "--user", "nobody", "--preload", worker=app)
    pool = m.wait_pool(1)
    assert versions(m, pool) == {pool[0]: 1}
