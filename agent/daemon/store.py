"""The store writer: TinyDB shards (agent/shards.py) written whole and atomically.

Only the newest shard is ever written, by one thread. It is rewritten whole
on each flush (write a temporary file, fsync, rename over the shard, fsync
the directory), so a reader or a crash sees the previous version or the
next, never a torn one. Once it holds SHARD_MAX_COMMANDS commands or
SHARD_MAX_BYTES of text it is sealed and the next one begins, so the cost of
a flush does not grow with the store, nor with the number of sessions.

The shard's tables are kept in memory as TinyDB lays them out (document ids
as text, in insertion order) and each flush adds or replaces its documents in
them directly: TinyDB's own insert() and update() rebuild the whole table for
every document, so N new sessions in a shard would cost O(N^2).

A session's document is written again into the newest shard whenever it
changes; readers take the last one. It carries the ingest checkpoint (where
in its log to resume), so the commands and the offset that produced them land
in the same atomic write: after a crash the agent resumes from the checkpoint
and stores every command exactly once. Access-log entries (agent/access_log.py)
go into the `access` table of the same writes, numbered across the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.access_log import ACCESS, AccessEntry, Action
from agent.daemon.disk import DiskGuard
from agent.daemon.quarantine import quarantine
from agent.files import Sharing, write_atomic
from agent.records import ENDED, Command, RecordError, Session, iso
from agent.shards import (
    COMMANDS,
    SESSIONS,
    StoreError,
    iter_sessions,
    list_shards,
    read_shard,
)

log = logging.getLogger(__name__)

SHARD_MAX_COMMANDS = 2_000
SHARD_MAX_BYTES = 1 << 20  # of JSON text: a flush rewrites about this much at most


@dataclass
class _Shard:
    """The newest shard: its tables in memory, written whole by flush()."""

    path: Path
    mode: int  # of the file
    # The sessions table first: readers may take it without the rest.
    tables: dict[str, dict[str, Any]]
    doc_ids: dict[str, int]  # session id -> its document's id here
    next_ids: dict[str, int]  # table -> the next document id
    size: int  # bytes of the last version written
    dirty: bool

    @classmethod
    def load(
        cls, path: Path, tables: dict[str, dict[str, Any]] | None, mode: int
    ) -> _Shard:
        if tables is None:
            empty: dict[str, dict[str, Any]] = {SESSIONS: {}, COMMANDS: {}}
            return cls(path, mode, empty, {}, {}, 0, True)
        ordered = {SESSIONS: tables.get(SESSIONS, {}), COMMANDS: {}}
        ordered.update(tables)
        sessions = ordered[SESSIONS]
        return cls(
            path,
            mode,
            ordered,
            {str(doc.get("id")): int(i) for i, doc in sessions.items()},
            {name: max(map(int, t), default=0) + 1 for name, t in ordered.items()},
            path.stat().st_size if path.exists() else 0,
            False,
        )

    def full(self) -> bool:
        # Access-log entries count with the commands: page views seal shards too.
        entries = len(self.tables[COMMANDS]) + len(self.tables.get(ACCESS, {}))
        return entries >= SHARD_MAX_COMMANDS or self.size >= SHARD_MAX_BYTES

    def put_session(self, session: Session) -> None:
        doc_id = self.doc_ids.get(session.id)
        if doc_id is None:
            doc_id = self.doc_ids[session.id] = self._next_id(SESSIONS)
        # Every document carries every key: this replaces the older one.
        self.tables[SESSIONS][str(doc_id)] = session.to_document()
        self.dirty = True

    def append(self, table: str, docs: list[Any]) -> None:
        """`docs` added to `table` (commands, access-log entries), in order."""
        rows = self.tables.setdefault(table, {})
        for doc in docs:
            rows[str(self._next_id(table))] = doc
        self.dirty = self.dirty or bool(docs)

    def _next_id(self, table: str) -> int:
        doc_id = self.next_ids.get(table, 1)
        self.next_ids[table] = doc_id + 1
        return doc_id

    def flush(self) -> None:
        if self.dirty:
            text = json.dumps(self.tables, ensure_ascii=False, separators=(",", ":"))
            data = text.encode("utf-8")
            write_atomic(self.path, data, self.mode)
            self.size = len(data)
            self.dirty = False


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What `audit-agent status` shows of the store writer."""

    store_dir: Path
    live_sessions: tuple[Session, ...]  # every session not ended, flushed or not
    pending_commands: int  # accepted, not yet flushed
    flushed_at: float | None
    flush_errors: int
    failing: bool  # the last write failed


@dataclass
class _Pending:
    session: Session
    commands: list[Command] = field(default_factory=list)


class Store:
    """The agent's writer: batches session updates, flushes them atomically."""

    def __init__(
        self,
        store_dir: Path,
        flush_interval_s: float,
        on_flushed: Callable[[list[Session]], None] | None = None,
        sharing: Sharing | None = None,
        disk: DiskGuard | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.disk = disk  # told when a write finds no space
        self.sharing = sharing or Sharing()
        self.flush_interval_s = flush_interval_s
        self.on_flushed = on_flushed
        # Also after each flush: what it made durable, commands included (events).
        self.on_committed: (
            Callable[[list[tuple[Session, list[Command]]]], None] | None
        ) = None
        self.on_access_committed: Callable[[list[AccessEntry]], None] | None = None
        self._access: list[AccessEntry] = []  # numbered, not yet flushed
        self._access_seq = 0  # the last number given
        # Live sessions an auditor terminated (the entry), for a restart.
        self.terminated: dict[str, AccessEntry] = {}
        self.quarantine_dir = store_dir.parent / "quarantine"
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._sessions: dict[str, Session] = {}  # newest state, flushed or not
        self._by_identity: dict[tuple[int, int], str] = {}
        self._next_of_tag: dict[str, int] = {}  # tag -> the N to try first
        self._shard: _Shard | None = None  # the newest, being written
        self._next_shard = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_errors = 0
        self.flush_error_at: float | None = None
        self.flushed_at: float | None = None

    # -- lifecycle -------------------------------------------------------

    def open(self) -> None:
        """Load every shard's sessions; quarantine the ones that are unusable."""
        self.sharing.directory(self.store_dir, (".json",))
        shards = list_shards(self.store_dir)
        newest: tuple[Path, dict[str, dict[str, Any]]] | None = None
        for path in shards:
            self._next_shard = int(path.stem) + 1
            try:
                tables = read_shard(path)
                sessions = list(iter_sessions(tables, path))
            except StoreError as e:
                self._quarantine(path, str(e))
                newest = None
                continue
            for session in sessions:
                self._remember(session)
            self._load_access(tables)
            newest = (path, tables)
        if newest is not None:
            shard = _Shard.load(*newest, self.sharing.file_mode)
            if not shard.full():
                self._shard = shard

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="store-writer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Flush what is pending and stop the writer thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def __enter__(self) -> Store:
        self.open()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the ingest asks --------------------------------------------

    def find(self, identity: tuple[int, int]) -> Session | None:
        with self._lock:
            sid = self._by_identity.get(identity)
            return self._sessions.get(sid) if sid else None

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def submit_access(self, entry: AccessEntry) -> AccessEntry:
        """Queue an access-log entry; it, numbered and timed by the store."""
        with self._lock:
            self._access_seq += 1
            entry = dataclasses.replace(
                entry, seq=self._access_seq, time=iso(time.time())
            )
            self._access.append(entry)
        return entry

    def new_session_id(self, tag: str) -> str:
        """The tag itself, or `tag~N` when an earlier session used the tag.

        Each tag remembers the N it reached: a tag used a thousand times does
        not cost a thousand lookups at each new session.
        """
        with self._lock:
            n = self._next_of_tag.get(tag, 1)
            sid = tag if n == 1 else f"{tag}~{n}"
            while sid in self._sessions:
                n += 1
                sid = f"{tag}~{n}"
            self._next_of_tag[tag] = n
            return sid

    def submit(
        self, session: Session, commands: list[Command] | tuple[Command, ...] = ()
    ) -> None:
        """Queue a session's new state and the commands that led to it."""
        with self._lock:
            pending = self._pending.get(session.id)
            if pending is None:
                pending = self._pending[session.id] = _Pending(session)
            pending.session = session
            pending.commands.extend(commands)
            self._remember(session)

    @property
    def access_seq(self) -> int:
        """The number of the last access-log entry (0: none yet)."""
        with self._lock:
            return self._access_seq

    @property
    def pending_count(self) -> int:
        with self._lock:
            return sum(len(p.commands) for p in self._pending.values())

    def snapshot(self) -> StoreSnapshot:
        with self._lock:
            live = tuple(s for s in self._sessions.values() if s.status not in ENDED)
            pending = sum(len(p.commands) for p in self._pending.values())
        failing = self.flush_error_at is not None and (
            self.flushed_at is None or self.flush_error_at > self.flushed_at
        )
        return StoreSnapshot(
            store_dir=self.store_dir,
            live_sessions=live,
            pending_commands=pending,
            flushed_at=self.flushed_at,
            flush_errors=self.flush_errors,
            failing=failing,
        )

    # -- writing ---------------------------------------------------------

    def _run(self) -> None:
        failing = 0  # flush errors in a row: logged when it starts and ends
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except OSError as e:
                self.flush_errors += 1
                self.flush_error_at = time.time()
                if self.disk is not None:
                    self.disk.no_space(e)
                if not failing:
                    log.error(
                        "cannot write store shard in %s: %s; what is not written "
                        "waits in memory and is retried every %.1fs",
                        self.store_dir,
                        e,
                        self.flush_interval_s,
                    )
                failing += 1
                continue
            if failing and self.flushed_at is not None:
                log.warning(
                    "store writes work again in %s (after %d failed tries)",
                    self.store_dir,
                    failing,
                )
            failing = 0

    def flush(self) -> None:
        """Write every pending update to the newest shard in one atomic write."""
        with self._lock:
            batch, self._pending = self._pending, {}
            access, self._access = self._access, []
        if not batch and not access:
            return
        try:
            self._write(batch, access)
        except BaseException:
            self._reload_newest()  # memory must not keep what the disk lacks
            with self._lock:  # keep the batch (and anything newer) for a retry
                self._access[:0] = access
                for sid, pending in batch.items():
                    newer = self._pending.get(sid)
                    if newer is not None:
                        pending.commands.extend(newer.commands)
                        pending.session = newer.session
                    self._pending[sid] = pending
            raise
        self.flushed_at = time.time()
        if self.on_flushed is not None:
            self.on_flushed([p.session for p in batch.values()])
        if self.on_committed is not None and batch:
            self.on_committed([(p.session, p.commands) for p in batch.values()])
        if self.on_access_committed is not None and access:
            self.on_access_committed(access)

    def _write(self, batch: dict[str, _Pending], access: list[AccessEntry]) -> None:
        if self._shard is None or self._shard.full():
            self._new_shard()
        shard = self._shard
        assert shard is not None
        for pending in batch.values():
            shard.put_session(pending.session)
            shard.append(COMMANDS, [c.to_document() for c in pending.commands])
        if access:
            shard.append(ACCESS, [e.to_document() for e in access])
        shard.flush()

    def _reload_newest(self) -> None:
        if self._shard is None:
            return
        path, mode = self._shard.path, self.sharing.file_mode
        try:
            tables = read_shard(path) if path.exists() else None
            self._shard = _Shard.load(path, tables, mode)
        except StoreError:
            self._shard = None

    def _new_shard(self) -> None:
        path = self.store_dir / f"{self._next_shard:08d}.json"
        self._next_shard += 1
        self._shard = _Shard.load(path, None, self.sharing.file_mode)

    def _load_access(self, tables: dict[str, dict[str, Any]]) -> None:
        for doc in tables.get(ACCESS, {}).values():
            seq = doc.get("seq") if isinstance(doc, dict) else None
            if isinstance(seq, int):
                self._access_seq = max(self._access_seq, seq)
            if isinstance(doc, dict) and doc.get("action") == Action.TERMINATE:
                with contextlib.suppress(RecordError):
                    entry = AccessEntry.from_document(doc)
                    if entry.ok and entry.session is not None:
                        self.terminated[entry.session] = entry

    def _remember(self, session: Session) -> None:
        self._sessions[session.id] = session
        self._by_identity[session.identity] = session.id

    def _quarantine(self, path: Path, why: str) -> None:
        target = quarantine(path, self.quarantine_dir, move=True)
        log.error("%s; moved it to %s and carry on without it", why, target)
