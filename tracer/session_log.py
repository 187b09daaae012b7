"""The session log's own lines: who the session is, and its lifecycle.

scripts/session_tracker.sh writes a log's first line (`start`: the ssh
process, its owner, terminal and argv) and an `attach` line each time a strace
attaches; the agent appends `detach` and `end` lines when a strace is lost or
a session ended unseen. All are `#bastion-audit {json}` lines, which strace
never writes, so one log tells the whole story of its session.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parsers.strace_lines import MARKER_PREFIX, parse_marker
from tracer import TracerError
from tracer.procfs import is_alive
from tracer.tags import valid_tag

START_LINE_MAX_BYTES = 64 << 10
RECORDERS = ("strace", "paramiko")
_TTY_RE = re.compile(r"/dev/(pts/\d+|tty\w+)")
# strace's own line when its tracee ends (`-ttt`, no `-f`), and nothing else:
#   1712345678.123456 +++ exited with 0 +++
#   1712345678.123456 +++ killed by SIGKILL (core dumped) +++
# A prompt or any output holding that text is inside a quoted write() line.
_STRACE_EXIT_RE = re.compile(
    rb"\d+\.\d+ \+\+\+ (?:exited with -?\d+|killed by SIG[A-Z0-9]+"
    rb"(?: \(core dumped\))?) \+\+\+"
)
TAIL_BYTES = 4096  # an end line is short: a longer last line is none


class SessionLogError(TracerError):
    """A session log whose start line is missing or wrong."""


@dataclass(frozen=True, slots=True)
class SessionStart:
    """What the start line of a session log says."""

    tag: str
    ssh_pid: int
    start_ticks: int
    started_at: float
    uid: int
    user: str
    tty: str
    argv: tuple[str, ...]
    ssh_version: str | None = None  # as compiled into its binary: argv reads by it
    # Who wrote the log: "strace" (session_tracker.sh) or "paramiko" (audit-shell's
    # own recorder, parsers/chunk_log.py).
    recorder: str = "strace"

    @property
    def identity(self) -> tuple[int, int]:
        """The ssh process, named for good: its pid and its start time in ticks."""
        return self.ssh_pid, self.start_ticks

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> SessionStart:
        try:
            tag = str(fields["tag"])
            ssh_pid = _count(fields["ssh_pid"])
            start_ticks = _count(fields["start_ticks"])
            started_at = float(fields["started_at"])
            uid = _count(fields["uid"])
            tty = str(fields["tty"])
            raw = base64.b64decode(str(fields["argv_b64"]), validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise SessionLogError(f"bad session start line: {e}") from e
        if not valid_tag(tag):
            raise SessionLogError(f"bad session start line: invalid tag {tag!r}")
        if tty and not _TTY_RE.fullmatch(tty):  # "": ssh had no terminal
            raise SessionLogError(f"bad session start line: invalid tty {tty!r}")
        argv = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)
        user = str(fields.get("user") or "") or f"uid:{uid}"
        version = fields.get("ssh_version")
        version = str(version) if isinstance(version, str) and version else None
        recorder = fields.get("recorder", "strace")
        if recorder not in RECORDERS:
            raise SessionLogError(f"bad session start line: recorder {recorder!r:.40}")
        return cls(
            tag,
            ssh_pid,
            start_ticks,
            started_at,
            uid,
            user,
            tty,
            argv,
            version,
            recorder,
        )


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def read_start(path: Path) -> SessionStart | None:
    """The session a log belongs to; None while its first line is unwritten."""
    with open(path, "rb") as f:
        head = f.read(START_LINE_MAX_BYTES)
    return start_from_head(head, f"log {path}")


def start_from_head(head: bytes, what: str) -> SessionStart | None:
    """The start line at the head of a log (`what` names it in errors).

    None while the first line is unwritten; SessionLogError if it is not one.
    """
    line, newline, _ = head.partition(b"\n")
    if not newline:
        if len(head) >= START_LINE_MAX_BYTES:
            raise SessionLogError(f"{what} has no start line")
        return None
    marker = parse_marker(line) if line.startswith(MARKER_PREFIX) else None
    if marker is None or marker.kind != "start":
        raise SessionLogError(f"{what} does not begin with a session start line")
    try:
        return SessionStart.from_fields(marker.fields)
    except SessionLogError as e:
        raise SessionLogError(f"{what}: {e}") from e


def find_log(logs_dir: Path, tag: str, identity: tuple[int, int]) -> Path | None:
    """The log session_tracker.sh writes for this ssh (see its naming rule)."""
    logs = find_logs(logs_dir, tag, identity)
    return logs[0] if logs else None


def find_logs(logs_dir: Path, tag: str, identity: tuple[int, int]) -> list[Path]:
    """Every log of this ssh by that rule, in its order.

    Two of ours that raced for one ssh can leave two: the second tracker
    found TAG.strace made but still without its start line (the first had
    not written it yet), and made TAG~PID-TICKS.strace.
    """
    pid, ticks = identity
    found = []
    for name in (f"{tag}.strace", f"{tag}~{pid}-{ticks}.strace"):
        path = logs_dir / name
        try:
            start = read_start(path)
        except (OSError, SessionLogError):
            continue
        if start is not None and start.identity == identity:
            found.append(path)
    return found


def _tail(path: Path) -> tuple[bytes, bool]:
    """The log's last TAIL_BYTES, and whether that is the whole log."""
    with open(path, "rb") as f:
        start = max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES)
        f.seek(start)
        return f.read(TAIL_BYTES), start == 0


def recorded_tty(path: Path | None) -> str | None:
    """The tty the log's start line recorded for the session, if any."""
    if path is None:
        return None
    try:
        start = read_start(path)
    except (OSError, SessionLogError):
        return None
    return start.tty if start is not None and start.tty else None


def end_orphans(logs_dir: Path, watched: set[tuple[int, int]]) -> None:
    """End the logs of unwatched sessions whose ssh is gone (no strace on it)."""
    try:
        names = os.listdir(logs_dir)
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(".strace"):
            continue
        path = logs_dir / name
        try:
            start = read_start(path)
            if start is None or start.identity in watched or is_alive(start.identity):
                continue
            mark_unended(path, "end", reason="ssh ended while not traced")
        except (OSError, SessionLogError):
            continue  # the ingest reports unusable logs


def has_ended(path: Path) -> bool:
    """Whether the log's last line is strace's exit line or our `end` line."""
    return is_end_line(*_tail(path))


def is_end_line(tail: bytes, whole: bool) -> bool:
    """Whether the last complete line of `tail` ends the session.

    `whole`: `tail` starts at the beginning of the log (else its first line
    may be the end of a longer one).
    """
    if not tail.endswith(b"\n"):
        return False  # strace writes its exit line whole: this is another line
    _, newline, last = tail[:-1].rpartition(b"\n")
    if not newline and not whole:
        return False
    if last.startswith(MARKER_PREFIX):
        marker = parse_marker(last)
        return marker is not None and marker.kind == "end"
    return _STRACE_EXIT_RE.fullmatch(last) is not None


def mark_unended(path: Path, kind: str, **fields: Any) -> bool:
    """Append a lifecycle line unless the log has ended or is gone.

    The ingest removes a closed session's log once the store holds it, which can
    happen between finding the log and writing to it: nothing is left to mark.
    """
    try:
        tail, whole = _tail(path)
        if is_end_line(tail, whole):
            return False
        # A strace killed mid-line leaves it unterminated: ours starts anew.
        append_marker(
            path, kind, newline=bool(tail) and not tail.endswith(b"\n"), **fields
        )
    except FileNotFoundError:
        return False
    return True


def append_marker(path: Path, kind: str, newline: bool = False, **fields: Any) -> None:
    """Append one lifecycle line; only while no strace writes the log."""
    line = (
        (b"\n" if newline else b"")
        + MARKER_PREFIX
        + json.dumps(
            {"event": kind, "time": round(time.time(), 6), **fields},
            separators=(",", ":"),
        ).encode("ascii")
        + b"\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, line)  # one write: O_APPEND keeps it whole at the end
    finally:
        os.close(fd)
