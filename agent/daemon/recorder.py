"""The recorder: each session's terminal output into its cast (agent/casts.py).

Re-fed events are skipped: after a restart the ingest reads each log again
from the stored checkpoint, which lies before what the recording already
holds. SESSION.cast.state remembers the log (inode) and the offset of the
last event taken and how much of the cast is committed; a cast found longer
than that is cut back to it, and events at or before the offset are skipped.
The ingest commits a session's recording before it hands the session to the
store, so the recording is always at least as far as the stored checkpoint.

Bulk output is capped: past `burst_max_bytes` of recording without a
keystroke in between, output is dropped until the next keystroke, and past
`max_bytes` for the session, for good. Either is marked in the recording with
a marker event and a visible line, and counted.

A full data disk pauses a recording instead of ending it: what a commit
could not write is cut off again, and once a commit works the recording says
from when output is missing (agent/daemon/disk.py).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.casts import CAST_SUFFIX, CASTS_DIR, IDLE_TIME_LIMIT_S
from agent.daemon.cast_state import STATE_SUFFIX, CastState
from agent.daemon.disk import DiskGuard
from agent.daemon.quarantine import quarantine
from agent.files import PRIVATE_FILE_MODE, Sharing
from agent.records import ENDED, Session, iso
from parsers.events import Chunk, Direction, Event, Marker, Resize, Transfer

log = logging.getLogger(__name__)

# Between two store submits, a recording is written when this much gathered
# or this long passed (each write replaces its state file).
COMMIT_BUFFER_BYTES = 256 << 10
COMMIT_INTERVAL_S = 1.0
_NOTE = "\r\n\x1b[0m\x1b[7m[bastion-audit: {}]\x1b[0m\r\n"


def mib(n: int) -> str:
    """A byte count for a person: 512 B, 12.0 KiB, 3.5 MiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


class CastWriter:
    """The recording of one session, fed its log's events in order."""

    def __init__(
        self,
        casts_dir: Path,
        session: Session,
        max_bytes: int,
        burst_max_bytes: int,
        file_mode: int = PRIVATE_FILE_MODE,
    ) -> None:
        self.path = casts_dir / f"{session.id}{CAST_SUFFIX}"
        self.state_path = casts_dir / f"{session.id}{STATE_SUFFIX}"
        self.session = session
        self.max_bytes = max_bytes
        self.burst_max_bytes = burst_max_bytes
        self.lines: list[bytes] = []  # written at the next commit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.inode: int | None = None
        self.dirty = False  # events taken since the last commit
        self.buffered = 0  # bytes in `lines`
        self.committed_at = time.monotonic()
        self.resume_after: int | None = None  # skip re-fed events up to here
        self.space_lost_at: float | None = None  # a commit found the disk full
        self.loss_noted = False  # the note saying so waits in `lines`
        loaded = CastState.load(self.state_path)
        identity = list(session.identity)
        if loaded is not None and loaded.identity not in ([], identity):
            # Another ssh's recording under this id (its store shard was lost).
            self._set_aside()
            loaded = None
        # The store keeps times to the millisecond; the cast keeps its own base.
        self.state = loaded or CastState(base=session.started_at, identity=identity)
        if loaded is not None and loaded.pending:
            self.decoder.setstate((bytes.fromhex(loaded.pending), 0))
        # No fd is kept between commits: a thousand live sessions must not
        # cost a thousand file descriptors.
        fd = self._open_cast()
        try:
            if file_mode != PRIVATE_FILE_MODE:  # read_group: audit-web plays it
                os.fchmod(fd, file_mode)
            # A crash may have left events after the committed size: they come
            # again.
            os.truncate(fd, self.state.size)
        finally:
            os.close(fd)
        self.loaded = loaded is not None

    def _open_cast(self) -> int:
        return os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_APPEND, 0o600
        )

    def _set_aside(self) -> None:
        quarantine_dir = self.path.parent.parent / "quarantine"
        for path in (self.path, self.state_path):
            if path.exists():
                target = quarantine(path, quarantine_dir, move=True)
                log.warning(
                    "session %s: %s belongs to another ssh; moved it to %s",
                    self.session.id,
                    path.name,
                    target,
                )

    # -- events ----------------------------------------------------------

    def event(self, session: Session, inode: int, event: Event) -> None:
        self.session = session
        if self.state.closed:
            return
        if self.inode != inode:
            self._log_changed(inode)
        if self.resume_after is not None:
            if event.offset <= self.resume_after:
                return  # in the recording already
            self.resume_after = None
        self.dirty = True
        self.state.offset = event.offset
        self._mark_gaps(event.time)
        if self.space_lost_at is not None and not self.loss_noted:
            self.loss_noted = True
            self._note(
                event.time,
                f"not recorded from {iso(self.space_lost_at)}: the data disk was full",
            )
        if isinstance(event, Chunk):
            if event.direction is Direction.OUTPUT:
                self._output(event)
            else:
                self._keystroke(event)
        elif isinstance(event, Resize):
            self.state.rows, self.state.cols = event.rows, event.cols
            if self.state.size or self.lines:
                self._write(event.time, "r", f"{event.cols}x{event.rows}")
        elif isinstance(event, Transfer):
            # One line in place of the protocol's bytes (they never reach it).
            self._note(
                event.time,
                f"{event.direction} {_shown(event.path)}: {event.size} bytes, "
                f"{event.outcome}",
            )
        elif isinstance(event, Marker) and event.kind == "detach":
            reason = event.fields.get("reason", "no reason given")
            self._write(event.time, "m", f"tracer detached ({reason})")

    def _log_changed(self, inode: int) -> None:
        first = self.inode is None
        if first and self.state.inode in (0, inode):
            # The log this state was written for: skip what the cast holds.
            self.resume_after = self.state.offset if self.loaded else None
        elif self.state.size:
            self._write(
                self.state.t, "m", "session log replaced: output may be missing"
            )
        self.inode = self.state.inode = inode

    def _mark_gaps(self, now: float) -> None:
        gaps = self.session.gaps
        for start, end in gaps[self.state.gaps :]:
            until = iso(end) if end is not None else "the end"
            self._note(
                start,
                f"not recorded from {iso(start)} to {until} (agent or tracer away)",
            )
        self.state.gaps = len(gaps)

    def _keystroke(self, chunk: Chunk) -> None:
        """A key ends a burst of output (the key itself is never recorded)."""
        if self.state.burst_dropped and not self.state.stopped:
            self._note(
                chunk.time,
                f"recording resumed: {mib(self.state.burst_dropped)} of output "
                "were not recorded",
            )
        self.state.burst = 0
        self.state.burst_dropped = 0

    def _output(self, chunk: Chunk) -> None:
        state = self.state
        if state.stopped or state.burst_dropped:
            state.dropped += len(chunk.data)
            state.burst_dropped += len(chunk.data)
            return
        text = self.decoder.decode(chunk.data)
        line = self._line(chunk.time, "o", text)
        if state.recorded + len(line) > self.max_bytes:
            state.stopped = True
            self._note(
                chunk.time,
                "recording stopped: this session's output passed "
                + mib(self.max_bytes),
            )
        elif state.burst + len(line) > self.burst_max_bytes:
            self._note(
                chunk.time,
                f"recording paused: more than {mib(self.burst_max_bytes)} of output "
                "without a keystroke",
            )
        else:
            self._append(line)
            state.recorded += len(line)
            state.burst += len(line)
            return
        state.dropped += len(chunk.data)
        state.burst_dropped += len(chunk.data)
        self.decoder.reset()

    def _note(self, t: float, text: str) -> None:
        """A marker for players that list them, and a line anyone sees."""
        self._write(t, "m", text)
        self._write(t, "o", _NOTE.format(text))

    def _write(self, t: float, code: str, data: str) -> None:
        self._append(self._line(t, code, data))

    def _line(self, t: float, code: str, data: str) -> bytes:
        rel = max(self.state.t, round(t - self.state.base, 6))
        self.state.t = rel
        text = json.dumps([rel, code, data], ensure_ascii=False)
        return text.encode("utf-8") + b"\n"

    def _append(self, line: bytes) -> None:
        if not self.state.size and not self.lines:
            self.lines.append(self._header())
            self.buffered += len(self.lines[0])
        self.lines.append(line)
        self.buffered += len(line)

    def due(self) -> bool:
        """Whether what is buffered should be written now though no one waits."""
        return self.dirty and (
            self.buffered >= COMMIT_BUFFER_BYTES
            or time.monotonic() - self.committed_at >= COMMIT_INTERVAL_S
        )

    def _header(self) -> bytes:
        s = self.session
        where = f"{s.remote_user}@{s.host}" + (f":{s.port}" if s.port != 22 else "")
        header: dict[str, Any] = {
            "version": 2,
            "width": self.state.cols,
            "height": self.state.rows,
            "timestamp": int(self.state.base),
            "idle_time_limit": IDLE_TIME_LIMIT_S,
            "title": f"{s.id}: {s.bastion_user} → {where}",
        }
        return json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n"

    # -- durability ------------------------------------------------------

    def commit(self, final: bool = False, sync: bool = False) -> None:
        """Append what is buffered, then record how far the cast goes."""
        if not (self.dirty or final or sync):
            return
        self.dirty = False
        self.committed_at = time.monotonic()
        if final and not self.state.closed:
            self._mark_gaps(self.session.ended_at or self.state.t)
            if self.state.dropped:
                self._write(
                    self.session.ended_at or 0.0,
                    "m",
                    f"session ended; {mib(self.state.dropped)} of output not recorded",
                )
            self.state.closed = True
        if self.lines or final or sync:
            data = b"".join(self.lines)
            self.lines.clear()
            self.buffered = 0
            fd = self._open_cast()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if final or sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self.state.size += len(data)
        pending = self.decoder.getstate()[0]
        self.state.pending = pending.hex()
        self.state.save(self.state_path)
        self.space_lost_at, self.loss_noted = None, False

    def lost_space(self) -> None:
        """A commit found the disk full: back to what was committed, note later.

        Cutting a file back needs no space; what waited to be written is
        dropped (memory stays bounded) and the recording will say so.
        """
        fd = self._open_cast()
        try:
            os.truncate(fd, self.state.size)
        finally:
            os.close(fd)
        self.lines.clear()
        self.buffered = 0
        self.loss_noted = False
        if self.space_lost_at is None:
            self.space_lost_at = time.time()

    def close(self) -> None:
        """Nothing is held open between commits (kept for the callers)."""


@dataclass(frozen=True, slots=True)
class RecorderSnapshot:
    errors: int  # recordings that could not be written


class Recorder:
    """Owns the recordings of the sessions being ingested (ingest thread only)."""

    def __init__(
        self,
        data_dir: Path,
        max_bytes: int,
        burst_max_bytes: int,
        sharing: Sharing | None = None,
    ) -> None:
        self.casts_dir = data_dir / CASTS_DIR
        self.sharing = sharing or Sharing()
        self.max_bytes = max_bytes
        self.burst_max_bytes = burst_max_bytes
        self.writers: dict[str, CastWriter] = {}
        self.broken: set[str] = set()  # sessions whose recording failed
        self.errors = 0
        self.disk: DiskGuard | None = None  # told of a full disk; it is no error

    def event(self, session: Session, inode: int, event: Event) -> None:
        if session.id in self.broken:
            return
        try:
            writer = self.writers.get(session.id)
            if writer is None:
                writer = self._open(session)
                if writer is None:
                    return
            writer.event(session, inode, event)
        except OSError as e:
            if self.disk is None or not self.disk.no_space(e):
                self._broken(session, e)

    def commit(self, session: Session, required: bool = True) -> None:
        """Before the ingest submits `session`: make its recording durable.

        Not `required` (nothing goes to the store this time): written only
        when enough has gathered or it waited long enough, so that a session
        typing or printing does not cost a state file per read.
        """
        writer = self.writers.get(session.id)
        if writer is None:
            return
        closed = session.status in ENDED
        if not (required or closed or writer.due()):
            return
        try:
            writer.session = session
            writer.commit(final=closed)
        except OSError as e:
            if self.disk is None or not self.disk.no_space(e):
                self._broken(session, e)
                return
            try:
                writer.lost_space()
            except OSError as again:
                self._broken(session, again)
            return
        if closed:
            self.writers.pop(session.id).close()

    def snapshot(self) -> RecorderSnapshot:
        return RecorderSnapshot(errors=self.errors)

    def __enter__(self) -> Recorder:
        if self.casts_dir.is_dir():  # made with the first recording, else
            self.sharing.directory(self.casts_dir, (CAST_SUFFIX,))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()

    def close_all(self) -> None:
        for writer in self.writers.values():
            with contextlib.suppress(OSError):
                writer.commit(sync=True)
            writer.close()
        self.writers.clear()

    def _open(self, session: Session) -> CastWriter | None:
        if session.status in ENDED:
            return None  # recorded to its end before
        self.casts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.casts_dir, self.sharing.dir_mode)
        writer = CastWriter(
            self.casts_dir,
            session,
            self.max_bytes,
            self.burst_max_bytes,
            self.sharing.file_mode,
        )
        if writer.state.closed:
            writer.close()
            return None
        self.writers[session.id] = writer
        return writer

    def _broken(self, session: Session, error: OSError) -> None:
        self.errors += 1
        self.broken.add(session.id)
        writer = self.writers.pop(session.id, None)
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        log.error(
            "session %s: cannot write its recording in %s: %s; not recording it",
            session.id,
            self.casts_dir,
            error.strerror or error,
        )


def _shown(name: str) -> str:
    """A name the sender chose, as it may appear on a screen: no controls."""
    return "".join(c if c.isprintable() else "?" for c in name)[:200]
