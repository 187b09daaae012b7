"""Fleet events: each session start, session end, command and access-log entry.

The store's writer hands over what each flush made durable (Store.on_committed);
this sink turns it into events and writes them to a file (for Vector, Fluent
Bit, Filebeat) and/or to syslog (agent/syslog.py), from its own thread, so a
slow or absent receiver never holds up the store.

Each event is emitted once per session and sequence number: a cursor of the
live sessions (how many commands were emitted) is kept in memory and saved to
DATA_DIR/events.cursor.json at most once a second. After a crash the next
agent compares the cursor with the store and emits what is missing; what was
emitted in the last second before the crash may come again, with the same
`event_id`, which a central store can de-duplicate on. A sink switched on for
an existing store starts from the store's present state, without history.
Access-log entries (agent/access_log.py) are numbered across the store; the
cursor keeps the last number emitted, and they are caught up the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.access_log import AccessEntry
from agent.escape import json_dumps
from agent.export_record import Stamp, flat_record, session_fields
from agent.files import write_atomic
from agent.reader import load
from agent.records import ENDED, Command, Session, iso
from agent.syslog import (
    FACILITIES,
    SEVERITY_INFO,
    SEVERITY_NOTICE,
    Sender,
    Target,
    frame,
    local_format,
    parse_target,
    rfc5424,
)

log = logging.getLogger(__name__)

CURSOR_FILE = "events.cursor.json"
CURSOR_SAVE_INTERVAL_S = 1.0
RETRY_INTERVAL_S = 2.0  # a syslog receiver that is away is tried again this often
MAX_BACKLOG = 10_000  # events kept for an absent syslog receiver; then the oldest go
MAX_SYSLOG_MESSAGE_BYTES = 8192  # rsyslog's default maxMessageSize
STOP_DEADLINE_S = 3.0

Batch = list[tuple[Session, list[Command]]]
AccessBatch = tuple[AccessEntry, ...]


@dataclass(frozen=True, slots=True)
class FleetEvent:
    kind: str  # "session_start", "session_end" or "command"
    session: Session
    command: Command | None = None

    @property
    def time(self) -> float | str:
        if self.command is not None:
            return self.command.time
        if self.kind == "session_end" and self.session.ended_at is not None:
            return self.session.ended_at
        return self.session.started_at

    def to_document(self, stamp: Stamp) -> dict[str, Any]:
        """The event's JSON fields (README: fleet events; schema/event.schema.json)."""
        s = self.session
        bastion = stamp.bastion
        key = str(self.command.seq) if self.command is not None else self.kind
        doc: dict[str, Any] = {
            "event": self.kind,
            "event_id": f"{bastion}/{s.id}/{key}",
            "bastion": bastion,
        }
        if self.command is not None:
            doc.update(flat_record(self.command, s, stamp))
            return doc
        t = self.time
        doc["time"] = t if isinstance(t, str) else iso(t)
        doc["session"] = s.id
        doc.update(session_fields(s))
        doc["remote_command"] = s.remote_command
        if self.kind == "session_end":
            doc["end_reason"] = s.end_reason
            doc["command_count"] = s.command_count
            public = s.public_fields()
            doc["gaps"] = public["gaps"]
            doc["unparsed_input"] = public["unparsed_input"]
        return doc


class Cursor:
    """How far the events of each live session went (commands emitted)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.live: dict[str, int] = {}
        self.done: set[str] = set()  # ended, or closed before this agent began
        self.access: int | None = None  # the last access entry emitted

    def load(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                doc = json.load(f)
            live = doc["live"]
            self.live = {str(k): int(v) for k, v in live.items()}
            access = doc.get("access")  # None in a cursor older than the log
            self.access = int(access) if access is not None else None
            return True
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.error(
                "events cursor %s is unreadable (%s); starting afresh", self.path, e
            )
            return False

    def save(self) -> None:
        doc = {"v": 1, "live": self.live, "access": self.access}
        text = json.dumps(doc, separators=(",", ":"))
        write_atomic(self.path, text.encode("utf-8"))

    def plan_access(self, entries: Iterable[AccessEntry]) -> list[AccessEntry]:
        """The access entries not emitted yet, each only once."""
        new = [e for e in entries if self.access is None or e.seq > self.access]
        if new:
            self.access = max(e.seq for e in new)
        return new

    def plan(self, session: Session, commands: Iterable[Command]) -> list[FleetEvent]:
        """The events a session's durable state calls for, each only once."""
        sid = session.id
        events: list[FleetEvent] = []
        seq = self.live.get(sid)
        if seq is None:
            if sid in self.done:
                return events
            events.append(FleetEvent("session_start", session))
            seq = 0
        for command in commands:
            if command.seq > seq:
                events.append(FleetEvent("command", session, command))
                seq = command.seq
        if session.status in ENDED:
            events.append(FleetEvent("session_end", session))
            self.live.pop(sid, None)
            self.done.add(sid)
        else:
            self.live[sid] = seq
        return events


@dataclass
class SinkStats:
    written: int = 0  # events written to the file
    sent: int = 0  # events sent to syslog
    backlog: int = 0  # events waiting for the syslog receiver
    dropped: int = 0  # events the backlog had no room for
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None


@dataclass(frozen=True, slots=True)
class SinkSnapshot:
    description: str  # where the events go
    stats: SinkStats  # a copy


class EventSink:
    """Owns the events thread, the events file and the syslog connection."""

    def __init__(
        self,
        data_dir: Path,
        events_file: Path | None = None,
        syslog: str = "",
        facility: str = "authpriv",
        stamp: Stamp | None = None,
    ) -> None:
        self.cursor = Cursor(data_dir / CURSOR_FILE)
        self.events_file = events_file
        self.target: Target | None = parse_target(syslog) if syslog else None
        self.facility = FACILITIES[facility]
        # The bastion's name and the risk rules, as every record has them.
        self.stamp = stamp or Stamp(socket.gethostname(), ())
        self.pid = os.getpid()
        self.stats = SinkStats()
        self._queue: queue.Queue[Batch | AccessBatch | None] = queue.Queue()
        self._backlog: collections.deque[bytes] = collections.deque()
        self._sender = Sender(self.target) if self.target is not None else None
        self._file: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._cursor_dirty = False
        self._cursor_saved_at = 0.0

    @property
    def description(self) -> str:
        return ", ".join(
            str(x) for x in (self.events_file, self.target) if x is not None
        )

    # -- lifecycle -------------------------------------------------------

    def open(
        self,
        sessions: list[Session],
        commands_of: Callable[[set[str]], Batch],
        access_seq: int = 0,
        access_after: Callable[[int], AccessBatch] | None = None,
    ) -> None:
        """Before the store's writer starts: catch up with what the store holds.

        `commands_of(ids)` reads those sessions' commands back from the store;
        it is called only when an earlier agent stopped before emitting
        everything it had stored; `access_after(seq)` the access entries past
        `seq`, when the store's last (`access_seq`) is further.
        """
        loaded = self.cursor.load()
        if self.cursor.access is None:
            self.cursor.access = access_seq  # the log's history stays out
        elif access_after is not None and self.cursor.access < access_seq:
            self._queue.put(access_after(self.cursor.access))
        if not loaded:
            self.cursor.live = {
                s.id: s.command_count for s in sessions if s.status not in ENDED
            }
            self.cursor.done = {s.id for s in sessions if s.status in ENDED}
            self.cursor.save()
            return
        behind: set[str] = set()
        for s in sessions:
            seq = self.cursor.live.get(s.id)
            if seq is None and s.status in ENDED:
                self.cursor.done.add(s.id)
            elif seq is None or s.command_count > seq or s.status in ENDED:
                behind.add(s.id)
        known = {s.id for s in sessions}
        for sid in set(self.cursor.live) - known:
            del self.cursor.live[sid]  # not in the store (a shard was quarantined)
        if behind:
            log.info("events: catching up on %d sessions", len(behind))
            self._queue.put(commands_of(behind))

    def snapshot(self) -> SinkSnapshot:
        return SinkSnapshot(self.description, dataclasses.replace(self.stats))

    def __enter__(self) -> EventSink:
        """After open(): start the events thread; stopped (and drained) on exit."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Emit what is queued (the syslog backlog for a few seconds), then stop."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sender is not None:
            self._sender.close()

    def committed(self, batch: Batch) -> None:
        """Store callback (the flushing thread): this is durable now."""
        self._queue.put(batch)

    def access_committed(self, entries: list[AccessEntry]) -> None:
        """Store callback (the flushing thread): these access entries are durable."""
        self._queue.put(tuple(entries))

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RETRY_INTERVAL_S)
            except queue.Empty:
                item = []
            try:
                if item is None:
                    self._drain(deadline=time.monotonic() + STOP_DEADLINE_S)
                    self._save_cursor(force=True)
                    return
                self._emit(item)
                self._save_cursor()
            except Exception:  # the daemon boundary for this thread
                log.exception("events round failed; going on")

    def _emit(self, batch: Batch | AccessBatch) -> None:
        events: list[tuple[str, bytes]] = []
        if isinstance(batch, tuple):
            for entry in self.cursor.plan_access(batch):
                doc = {
                    "event": "access",
                    "event_id": f"{self.stamp.bastion}/access/{entry.seq}",
                    "bastion": self.stamp.bastion,
                    **entry.to_document(),
                }
                events.append(("access", _dumps(doc)))
                self._cursor_dirty = True
            batch = []
        for session, commands in batch:
            for event in self.cursor.plan(session, commands):
                events.append((event.kind, self._encode(event)))
                self._cursor_dirty = True
        if events and self.events_file is not None:
            self._write_file([line for _, line in events])
        if self.target is not None:
            self._queue_syslog(events)
            self._drain(deadline=None)

    def _encode(self, event: FleetEvent) -> bytes:
        return _dumps(event.to_document(self.stamp))

    # -- the file --------------------------------------------------------

    def _write_file(self, lines: list[bytes]) -> None:
        assert self.events_file is not None
        try:
            out = self._open_file()
            out.write(b"".join(line + b"\n" for line in lines))
            out.flush()
            self.stats.written += len(lines)
            self.stats.last_ok_at = time.time()
        except OSError as e:
            self._error(f"cannot write {self.events_file}: {e.strerror or e}")
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open_file(self) -> IO[bytes]:
        """The events file, opened again when a log rotation moved it away."""
        assert self.events_file is not None
        path = self.events_file
        if self._file is not None:
            try:
                same = os.stat(path).st_ino == os.fstat(self._file.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return self._file
            self._file.close()
            self._file = None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "ab")
        return self._file

    # -- syslog ----------------------------------------------------------

    def _queue_syslog(self, events: list[tuple[str, bytes]]) -> None:
        assert self.target is not None
        now = time.time()
        for kind, line in events:
            severity = SEVERITY_INFO if kind == "command" else SEVERITY_NOTICE
            pri = self.facility * 8 + severity
            msg = _fit(line, MAX_SYSLOG_MESSAGE_BYTES - 200)
            if self.target.scheme == "unix":
                message = local_format(pri, now, self.pid, msg)
            else:
                message = rfc5424(
                    pri, iso(now), self.stamp.bastion, self.pid, kind, msg
                )
            if len(self._backlog) >= MAX_BACKLOG:
                self._backlog.popleft()
                self.stats.dropped += 1
            self._backlog.append(frame(self.target, message))
        self.stats.backlog = len(self._backlog)

    def _drain(self, deadline: float | None) -> None:
        """Send the backlog; on failure keep it for the next round (or deadline)."""
        assert self._sender is not None or self.target is None
        while self._backlog and self._sender is not None:
            try:
                self._sender.send(self._backlog[0])
            except OSError as e:
                self._error(f"cannot send to {self.target}: {e.strerror or e}")
                if deadline is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
                continue
            self._backlog.popleft()
            self.stats.sent += 1
            self.stats.last_ok_at = time.time()
        self.stats.backlog = len(self._backlog)

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.error("events: %s; will retry", message)
        self.stats.last_error = message
        self.stats.last_error_at = time.time()

    def _save_cursor(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._cursor_dirty:
            return
        if not force and now - self._cursor_saved_at < CURSOR_SAVE_INTERVAL_S:
            return
        try:
            self.cursor.save()
        except OSError as e:
            self._error(f"cannot save {self.cursor.path}: {e.strerror or e}")
            return
        self._cursor_dirty = False
        self._cursor_saved_at = now


def _dumps(doc: dict[str, Any]) -> bytes:
    """One event's JSON: UTF-8, no raw control (what users typed is in it)."""
    return json_dumps(doc, separators=(",", ":")).encode()


def _fit(line: bytes, limit: int) -> bytes:
    """A JSON event short enough for one syslog message: the command is cut."""
    if len(line) <= limit:
        return line
    doc = json.loads(line)
    command = str(doc.get("command") or "")
    over = len(line) - limit + 64
    cut = command.encode("utf-8")[: max(0, len(command.encode("utf-8")) - over)]
    doc["command"] = cut.decode("utf-8", "ignore")
    doc["command_truncated"] = True
    text = _dumps(doc)
    return text if len(text) <= limit else text[:limit]


def stored_batch(data_dir: Path, ids: set[str]) -> Batch:
    """Those sessions with all their stored commands, read back from the store."""
    snapshot = load(data_dir)
    commands: dict[str, list[Command]] = {sid: [] for sid in ids}
    for command in snapshot.commands:
        if command.session in commands:
            commands[command.session].append(command)
    sessions = sorted(
        (snapshot.sessions[sid] for sid in ids if sid in snapshot.sessions),
        key=lambda s: (s.started_at, s.id),
    )
    return [(s, sorted(commands[s.id], key=lambda c: c.seq)) for s in sessions]


def stored_access(data_dir: Path, after: int) -> AccessBatch:
    """The access entries past `after`, read back from the store."""
    return tuple(e for e in load(data_dir).access if e.seq > after)
