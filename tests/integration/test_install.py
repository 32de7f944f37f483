"""`meson install` gives a usable forkpool: the library (shared and
static), its header, its pkg-config file, the program and its manual page.

The build under test (the one FORKPOOL_BIN comes from) is installed with
--destdir into a temporary directory; examples/quickstart.c is then built
out of the tree against that copy, with nothing but
`pkg-config --cflags --libs forkpool`, and run.  The manual page must
render without a single warning.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from fp.base import FORKPOOL_BIN, REPO
from fp.master import Master


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in args], **kw)


class Installed:
    """Where `meson install --destdir` put things."""

    def __init__(self, dest):
        self.dest = dest
        pcs = sorted(dest.glob("**/pkgconfig/forkpool.pc"))
        assert len(pcs) == 1, f"expected one forkpool.pc under {dest}, found {pcs}"
        self.pc = pcs[0]
        m = re.search(r"^prefix=(.*)$", self.pc.read_text(), re.M)
        assert m, f"{self.pc} has no prefix= line:\n{self.pc.read_text()}"
        self.prefix = m.group(1)
        # The installed tree: DESTDIR + prefix.
        self.root = dest / self.prefix.lstrip("/")
        self.libdir = self.pc.parent.parent

    def pkg_config(self, *args):
        env = dict(os.environ, PKG_CONFIG_PATH=str(self.pc.parent))
        env.pop("PKG_CONFIG_LIBDIR", None)
        res = run(["pkg-config", f"--define-variable=prefix={self.root}", *args,
                   "forkpool"], env=env)
        assert res.returncode == 0, f"pkg-config {' '.join(args)} forkpool:\n{res.stderr}"
        return res.stdout.split()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not FORKPOOL_BIN:
        pytest.skip("FORKPOOL_BIN is not set")
    meson = shutil.which("meson")
    if meson is None:
        pytest.skip("meson is not on PATH")
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not on PATH")
    build = pathlib.Path(FORKPOOL_BIN).resolve().parent.parent
    if not (build / "meson-private").is_dir():
        pytest.skip(f"{build} is not a meson build directory")
    dest = tmp_path_factory.mktemp("destdir")
    # --no-rebuild: install the build under test as it is (the suite runs
    # after it was built), and never rebuild it from under the tests.
    res = run([meson, "install", "-C", build, "--no-rebuild", "--destdir", dest])
    assert res.returncode == 0, (
        f"meson install failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    inst = Installed(dest)
    inst.sanitize = build_option(build, "b_sanitize")
    return inst


def build_option(build, name):
    """The value of a meson option of the build, or None."""
    res = run(["meson", "introspect", build, "--buildoptions"])
    if res.returncode != 0:
        return None
    for opt in json.loads(res.stdout):
        if opt.get("name") == name:
            return opt.get("value")
    return None


def test_install_puts_every_part_in_place(installed):
    root, libdir = installed.root, installed.libdir
    exe = root / "bin" / "forkpool"
    assert os.access(exe, os.X_OK), f"no program at {exe}"
    res = run([exe, "--version"])
    assert res.returncode == 0 and res.stdout.startswith("forkpool "), res
    assert (root / "include" / "forkpool.h").is_file()
    assert (libdir / "libforkpool.a").is_file()
    assert (libdir / "libforkpool.so").exists(), sorted(p.name for p in libdir.iterdir())
    assert (root / "share" / "man" / "man1" / "forkpool.1").is_file()


def test_quickstart_builds_and_runs_against_the_installed_library(installed, tmp_path,
                                                                  monkeypatch):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    cflags = installed.pkg_config("--cflags")
    libs = installed.pkg_config("--libs")
    assert f"-I{installed.root / 'include'}" in cflags, cflags
    assert f"-L{installed.libdir}" in libs, libs
    # A library built with sanitizers needs their runtime first in the
    # program (scripts/test runs the suite in such a build too).
    sanitize = ([f"-fsanitize={installed.sanitize}"]
                if installed.sanitize not in (None, "none") else [])
    shutil.copy(REPO / "examples" / "quickstart.c", tmp_path)
    res = run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", *sanitize, "-o",
               "quickstart", "quickstart.c", *cflags, *libs], cwd=tmp_path)
    assert res.returncode == 0, f"building quickstart failed:\n{res.stderr}"

    monkeypatch.setenv("LD_LIBRARY_PATH", str(installed.libdir))
    m = Master(str(tmp_path / "quickstart"), ["2"], str(tmp_path), name="quickstart")
    try:
        m.start()
        pool = m.wait_pool(2)
        with open(f"/proc/{m.pid}/maps") as f:
            maps = f.read()
        assert str(installed.libdir / "libforkpool.so") in maps, (
            "quickstart does not use the installed libforkpool.so")
        for slot, pid in pool.items():
            m.wait_out(rf"I am here: worker {slot} pid {pid}$")
        assert m.stop() == 0, m.describe()
        m.assert_tree_gone()
    finally:
        m.kill_all()


def rendered(page):
    """The page as text, by groff -ww: (text, warnings)."""
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (Debian package groff-base)")
    res = run(["groff", "-ww", "-man", "-Tutf8", page])
    assert res.returncode == 0, res.stderr
    # Bold and underline are overstrikes (c BS c, _ BS c); and whatever
    # glyph a dash becomes, compare with ASCII.
    text = re.sub(r".\x08", "", res.stdout)
    text = re.sub("[\u2010\u2011\u2012\u2013\u2212]", "-", text)
    return text, res.stderr


@pytest.mark.parametrize("which", ["installed", "source"])
def test_man_page_renders_without_warnings(installed, which):
    page = (installed.root / "share" / "man" / "man1" / "forkpool.1"
            if which == "installed" else REPO / "doc" / "forkpool.1")
    text, warnings = rendered(page)
    assert warnings == "", f"groff -ww warns about {page}:\n{warnings}"
    assert "FORKPOOL(1)" in text


def test_man_l_shows_the_page(installed):
    if shutil.which("man") is None:
        pytest.skip("man is not installed (Debian package man-db)")
    page = installed.root / "share" / "man" / "man1" / "forkpool.1"
    env = dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="80")
    res = run(["man", "-l", page], env=env)
    assert res.returncode == 0, res.stderr
    assert not re.search(r"(?i)warning|error", res.stderr), res.stderr
    text = re.sub(r".\x08", "", res.stdout)
    for heading in ("NAME", "SYNOPSIS", "OPTIONS", "SIGNALS", "EXIT STATUS",
                    "ENVIRONMENT", "EXAMPLES"):
        assert re.search(rf"^{heading}$", text, re.M), f"no {heading} section"


def test_man_page_covers_every_flag_command_and_variable(installed):
    text, _ = rendered(REPO / "doc" / "forkpool.1")
    words = set(re.findall(r"[A-Za-z0-9_-]+", text))
    help_text = run([FORKPOOL_BIN, "--help"]).stdout
    ctl_help = run([FORKPOOL_BIN, "ctl", "--help"]).stdout
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*[a-z])", help_text + ctl_help))
    flags |= set(re.findall(r"(?<![\w-])(-[a-zA-Z])\b", help_text))
    assert "--workers" in flags and "--control" in flags, flags
    missing = sorted(f for f in flags if f not in words)
    assert not missing, f"the man page does not mention {missing}"
    commands = re.findall(r"^  (\w+)", ctl_help.split("Commands:")[1], re.M)
    commands += ["add", "remove", "stop"]
    signals = ["SIGTERM", "SIGQUIT", "SIGINT", "SIGHUP", "SIGTTIN", "SIGTTOU",
               "SIGUSR1", "SIGCHLD"]
    env = ["FORKPOOL_CONTROL", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
           "WATCHDOG_USEC"]
    missing = sorted(w for w in commands + signals + env if w not in words)
    assert not missing, f"the man page does not mention {missing}"
    for status in ("0", "1", "2"):
        assert re.search(rf"^EXIT STATUS$.*^ +{status} ", text, re.M | re.S), (
            f"exit status {status} is not described")
