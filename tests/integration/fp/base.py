"""What every test needs: the binary under test, a deadline and a way to
wait for a condition until it, a way to print figures, and a few small
helpers around the build and the command line."""

import collections
import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
FORKPOOL_BIN = os.environ.get("FORKPOOL_BIN")
FORKPOOL_CHAOS = os.environ.get("FORKPOOL_CHAOS")

# Deadline for anything that should happen "soon": long enough for a loaded
# 2-core machine, short enough that a real hang fails in reasonable time.
TIMEOUT = 20.0
POLL = 0.01


def wait_for(pred, timeout=TIMEOUT, interval=POLL, what=None):
    """Poll pred() until it returns something truthy and return that value.

    Raises AssertionError after `timeout` seconds.  `what` describes the
    condition in the failure message; it may be a callable returning text
    (evaluated only on failure, e.g. to append a log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else (what or getattr(pred, "__name__", "condition"))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {desc}")
        time.sleep(interval)


def report(capsys, text):
    """Print figures an issue asks for, visible even when pytest captures
    output (a plain `pytest -v` run)."""
    with capsys.disabled():
        print("\n    " + text.replace("\n", "\n    "))


def shorten(text, width=300):
    """`text`, or its start and end around a note of how much was cut."""
    if len(text) <= width:
        return text
    keep = width // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep} more]...{text[-keep:]}"


def build_module(tmp_path, name, source):
    """Compile a worker module from C source into tmp_path/NAME.so, with
    the project's warnings as errors; its path.  Skips without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH")
    (tmp_path / f"{name}.c").write_text(source)
    res = subprocess.run(
        [cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         f"-I{REPO / 'include'}", "-o", f"{name}.so", f"{name}.c"],
        cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, f"compiling the {name} worker failed:\n{res.stderr}"
    return str(tmp_path / f"{name}.so")


def build_sanitizers(forkpool_bin):
    """The -Db_sanitize of the build FORKPOOL_BIN comes from ("" if none),
    read from meson's introspection files."""
    info = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(forkpool_bin))),
                        "meson-info", "intro-buildoptions.json")
    try:
        with open(info) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        return ""
    for o in opts:
        if o.get("name") == "b_sanitize":
            return "" if o.get("value") in (None, "none") else str(o["value"])
    return ""


# ---------------------------------------------------------------------------
# A command line that ran to completion (the run_cli fixture)


CliResult = collections.namedtuple("CliResult", "returncode stdout stderr")


def names_flag(line, flag):
    """`flag` appears as a whole option name (--worker is not --workers)."""
    return re.search(re.escape(flag) + r"(?![\w-])", line) is not None


def assert_one_line_error(res, flag, status=2):
    """A CliResult that failed with `status` (any non-zero if None) and
    said so in one stderr line naming `flag`."""
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    if status is None:
        assert res.returncode != 0, f"exit status 0, expected a failure; stderr:\n{res.stderr}"
    else:
        assert res.returncode == status, (
            f"exit status {res.returncode}, expected {status}; stderr:\n{res.stderr}")
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    assert names_flag(lines[0], flag), f"the error does not name {flag}: {lines[0]!r}"
