"""audit-shell's side of a paramiko recording: `<tag>.chunks` in the spool.

The file is created O_EXCL|O_NOFOLLOW, mode 0600, owned by the bastion user
(the agent checks that owner against the start line, agent/daemon/spool.py).
Every record is one O_APPEND write of whole lines (parsers/chunk_log.py), made
*before* the bytes it holds are relayed, so nothing crosses unrecorded.

When a write fails (disk full, file size limit, the spool gone): strict mode
raises RecorderFailed and the caller ends the session; permissive mode cuts
the file back to its last whole line, goes on, and when a write works again
first writes a `detach` line timed when writing stopped, which the ingest
turns into a gap [from, to]. If no write ever works again, the agent closes
the session when the recorder process is gone, with a gap from its last
record (agent/daemon/ingest.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agent import AgentError
from parsers.chunk_log import SUFFIX, encode_chunk, encode_resize
from parsers.events import Direction
from parsers.strace_lines import MARKER_PREFIX
from tracer import Mode


class RecorderFailed(AgentError):
    """The recording cannot be written; in strict mode the session must end."""


def marker_line(kind: str, when: float, **fields: Any) -> bytes:
    doc = {"event": kind, "time": round(when, 6), **fields}
    return MARKER_PREFIX + json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def start_fields(
    tag: str,
    pid: int,
    start_ticks: int,
    uid: int,
    user: str,
    tty: str,
    argv: list[str],
    rows: int,
    cols: int,
    proof: str = "",
) -> dict[str, Any]:
    """The start line's fields, as session_tracker.sh writes them for strace.

    `proof`: the secret of the connection record (agent/intent_file.py), by
    which the agent knows the recording for audit-shell's own.
    """
    return {
        "tag": tag,
        "ssh_pid": pid,
        "start_ticks": start_ticks,
        "started_at": round(time.time(), 6),
        "uid": uid,
        "user": user,
        "tty": tty,
        "argv_b64": base64.b64encode("\0".join(argv).encode()).decode(),
        "rows": rows,
        "cols": cols,
        "recorder": "paramiko",
        "proof": proof,
    }


class ChunkWriter:
    """One session's recording; a context manager that writes the end line."""

    def __init__(self, spool: Path, tag: str, mode: Mode = Mode.STRICT) -> None:
        self.path = spool / f"{tag}{SUFFIX}"
        self.mode = mode
        self.fd = -1
        self.size = 0  # bytes of whole lines written
        self.gap_since: float | None = None  # permissive: writing stopped here
        self.failure = ""  # why writing stopped, for the detach line
        self.end_reason = "paramiko session ended"
        self.end_status: str | None = None  # "terminated": cut by the recorder

    def open(self, start: dict[str, Any]) -> None:
        """Create the file and write its start line; OSError if that fails."""
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND
        ) | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o600)
        try:
            self._write_all(marker_line("start", start["started_at"], **start))
        except OSError:
            os.close(self.fd)
            self.fd = -1
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chunk(self, direction: Direction, data: bytes) -> None:
        self.record(encode_chunk(time.time(), direction, data))

    def resize(self, rows: int, cols: int) -> None:
        self.record(encode_resize(time.time(), rows, cols))

    def record(self, line: bytes) -> None:
        """Append whole lines; RecorderFailed (strict) or a gap (permissive)."""
        try:
            if self.gap_since is not None:
                self._write_all(
                    marker_line("detach", self.gap_since, reason=self.failure)
                )
                self.gap_since = None
            self._write_all(line)
        except OSError as e:
            self._failed(e)

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            fields: dict[str, Any] = {"reason": self.end_reason}
            if self.end_status is not None:
                fields["status"] = self.end_status
            self.record(marker_line("end", time.time(), **fields))
        except RecorderFailed:
            pass  # the agent ends it when this process is gone
        finally:
            os.close(self.fd)
            self.fd = -1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def _failed(self, error: OSError) -> None:
        why = f"cannot write recording {self.path}: {error.strerror or error}"
        # A line cut short would be junk to the agent: back to the last whole one.
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)
        if self.mode == Mode.STRICT:
            raise RecorderFailed(why) from error
        if self.gap_since is None:
            self.gap_since = time.time()
            self.failure = why
