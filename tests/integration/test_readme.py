"""The README's "Writing a worker" code is real: both snippets are taken out
of README.md, compiled with -Wall -Wextra -Werror, and run — the module
under the forkpool program, the other as a program of its own linked with
the static libforkpool of this build.
"""

import pathlib
import re
import shutil
import subprocess

import pytest

from fp.base import REPO, build_sanitizers
from fp.master import Master

CFLAGS = ["-std=gnu11", "-Wall", "-Wextra", "-Werror"]


def snippet(first_line_start):
    """The ```c block of README.md whose first line starts so."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```c\n(.*?)```", text, re.S):
        if block.startswith(first_line_start):
            return block
    raise AssertionError(f"README.md has no C block starting {first_line_start!r}")


def compile_c(args, cwd):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    res = subprocess.run([cc] + CFLAGS + args, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stderr}"


def pkg_libs():
    # libforkpool.a dlopen()s libsystemd rather than linking it, but its
    # pkg-config file names it (meson lists the header-only dependency);
    # linking it when unused does no harm.
    pkgs = ["libevent", "yajl"]
    if subprocess.run(["pkg-config", "--exists", "libsystemd"]).returncode == 0:
        pkgs.append("libsystemd")
    res = subprocess.run(["pkg-config", "--libs", *pkgs],
                         capture_output=True, text=True, check=True)
    return res.stdout.split()


def check_hello(m, workers):
    """Both workers say hello, tick, and stop cleanly on SIGTERM."""
    pool = m.wait_pool(workers)
    for slot, pid in pool.items():
        m.wait_out(rf"^\[worker {slot} pid {pid}\] hello from worker {slot} pid {pid}$")
        m.wait_log(rf" info worker {slot} pid {pid}: tick$")
    assert m.stop() == 0, m.describe()
    m.assert_tree_gone()


def test_readme_module_runs_under_forkpool(forkpool, tmp_path):
    (tmp_path / "hello.c").write_text(snippet("/* hello.c:"))
    compile_c(["-shared", "-fPIC", f"-I{REPO / 'include'}", "-o", "hello.so", "hello.c"],
              tmp_path)
    m = forkpool("-w", "2", "-k", str(tmp_path / "hello.so"), "--", "1")
    check_hello(m, 2)


def test_readme_program_links_libforkpool(forkpool_bin, tmp_path):
    lib = pathlib.Path(forkpool_bin).resolve().parent / "libforkpool.a"
    if not lib.exists():
        pytest.skip(f"no static library at {lib}")
    (tmp_path / "hello.c").write_text(snippet("/* hello.c:"))
    (tmp_path / "hello_main.c").write_text(snippet("/* hello_main.c:"))
    # A sanitized build's library needs the sanitizers' runtime too.
    san = build_sanitizers(forkpool_bin)
    compile_c([f"-I{REPO / 'include'}", "-o", "hello", "hello_main.c", str(lib)]
              + pkg_libs() + ["-ldl"] + ([f"-fsanitize={san}"] if san else []),
              tmp_path)
    m = Master(str(tmp_path / "hello"), [], str(tmp_path), name="hello").start()
    try:
        check_hello(m, 2)
    finally:
        m.kill_all()
