"""The master's log and the workers' captured output: the line formats,
files read as another process appends to them, and --log-format json."""

import datetime
import json
import os
import re

from fp.base import shorten

LOG_LINE_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) "
    r"(?P<level>debug|info|warning|error) "
    r"(?P<origin>master|worker \d+ pid \d+): "
    r"(?P<msg>.+)$"
)
READY_RE = re.compile(r"\bworker (\d+) pid (\d+) ready\b")
# A worker's stdout/stderr line as the master re-emits it in text format.
OUTPUT_LINE_RE = re.compile(r"^\[worker (?P<id>\d+) pid (?P<pid>\d+)\] (?P<line>.*)$", re.S)
JSON_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
JSON_LEVELS = ("debug", "info", "warning", "error")


def log_time(line):
    """The timestamp of a master log line, as seconds (float)."""
    m = LOG_LINE_RE.match(line)
    assert m, f"not a log line: {line!r}"
    dt = datetime.datetime.strptime(m.group("ts"), "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


# ---------------------------------------------------------------------------
# Files another process appends to


class Tail:
    """A file another process appends to, read incrementally: only
    complete lines are handed out, so nothing sees half a line."""

    def __init__(self, path):
        self.path = str(path)
        self._pos = 0
        self._pending = b""

    def new_lines(self):
        """The complete lines appended since the last call, as bytes that
        end with a newline (b"" if none, or no file yet)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                new = f.read()
        except FileNotFoundError:
            return b""
        self._pos += len(new)
        data = self._pending + new
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return data[:cut]


class LogFile(Tail):
    """A file another process appends to, read incrementally.

    Only complete lines are exposed, so a regex never matches half a line.
    """

    def __init__(self, path):
        super().__init__(path)
        self._text = ""

    def text(self):
        self._text += self.new_lines().decode(errors="replace")
        return self._text

    def lines(self):
        # Only "\n" ends a line: str.splitlines() would also cut at \r,
        # \v, \f, \x1c..\x1e and \x85, which a worker may print.
        text = self.text()
        return text[:-1].split("\n") if text else []

    def tail(self, n=40, width=300):
        """The last n lines, each cut to `width` characters, for messages."""
        return "\n".join(shorten(l, width) for l in self.lines()[-n:])


# ---------------------------------------------------------------------------
# JSON logs (--log-format json)


def parse_json_line(raw, where="line"):
    """One line of a --log-format json file (bytes, no newline) -> dict.

    Strict: the bytes must be valid UTF-8 and one JSON object with the
    keys every record has (time, level, origin, pid, msg) of the right
    types; worker lines carry "worker", captured lines "stream", and
    "fields" is an object of strings.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError(f"{where} is not valid UTF-8 ({e}): {raw!r}") from None
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise AssertionError(f"{where} is not JSON ({e}): {raw!r}") from None
    assert isinstance(rec, dict), f"{where} is not a JSON object: {raw!r}"
    problems = []
    if not (isinstance(rec.get("time"), str) and JSON_TIME_RE.match(rec["time"])):
        problems.append("time")
    if rec.get("level") not in JSON_LEVELS:
        problems.append("level")
    if rec.get("origin") not in ("master", "worker"):
        problems.append("origin")
    if not isinstance(rec.get("pid"), int) or isinstance(rec.get("pid"), bool):
        problems.append("pid")
    if not isinstance(rec.get("msg"), str):
        problems.append("msg")
    if rec.get("origin") == "worker" and (
            not isinstance(rec.get("worker"), int) or isinstance(rec.get("worker"), bool)):
        problems.append("worker")
    if "stream" in rec and rec["stream"] not in ("stdout", "stderr"):
        problems.append("stream")
    if "fields" in rec and not (isinstance(rec["fields"], dict) and
                                all(isinstance(v, str) for v in rec["fields"].values())):
        problems.append("fields")
    assert not problems, f"{where}: bad or missing {', '.join(problems)}: {raw!r}"
    return rec


class JsonLog(Tail):
    """A --log-format json file another process appends to, parsed
    incrementally and strictly (parse_json_line) as complete lines arrive.

    Records are kept in .records, or handed to on_record(rec) instead (a
    flood of records need not sit in memory).
    """

    def __init__(self, path, on_record=None):
        super().__init__(path)
        self.on_record = on_record
        self.records = []
        self.count = 0

    def read(self):
        data = self.new_lines()
        if data:
            for raw in data[:-1].split(b"\n"):
                self.count += 1
                rec = parse_json_line(raw, f"{os.path.basename(self.path)} line {self.count}")
                if self.on_record:
                    self.on_record(rec)
                else:
                    self.records.append(rec)
        return self.records


def read_json_log(path):
    """Every line of a finished --log-format json file, parsed strictly.

    The file must end with a newline (no half-written last line).
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return []
    assert data.endswith(b"\n"), f"{path} does not end with a newline: {data[-200:]!r}"
    return [parse_json_line(raw, f"{os.path.basename(path)} line {n}")
            for n, raw in enumerate(data[:-1].split(b"\n"), 1)]
