"""The store writer: TinyDB shards (agent/shards.py) written whole and atomically.

Only the newest shard is ever written, by one thread. It is rewritten whole
on each flush (write a temporary file, fsync, rename over the shard, fsync
the directory), so a reader or a crash sees the previous version or the
next, never a torn one. Once it holds SHARD_MAX_COMMANDS commands or
SHARD_MAX_BYTES of text it is sealed and the next one begins, so the cost of
a flush grows neither with the store nor with its sessions: it encodes what
changed and writes one copy of the shard (agent/daemon/shard_file.py).

A session's document is written again into the newest shard whenever it
changes; readers take the last one. It carries the ingest checkpoint (where
in its log to resume), so the commands and the offset that produced them land
in the same atomic write: after a crash the agent resumes from the checkpoint
and stores every command exactly once. Access-log entries (agent/access_log.py)
go into the `access` table of the same writes, numbered across the store.

With a Chain (agent/daemon/signer.py) each command and new session state
gets its link (agent/chain.py), and signed checkpoints land, in that same
write; after `kill -9` the head is read back from the shards. A session's
document changes in place only while its chained fields stay the same; a new
state, or its first write into a new shard, is a new document. Pruning
(agent/daemon/prune.py) takes the same write lock: one writer.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.access_log import ACCESS, AccessEntry, stored_state
from agent.chain import CHECKPOINTS, COMMAND, SESSION
from agent.chain import record_fields as chained_fields
from agent.daemon.disk import DiskGuard, WriteFailures
from agent.daemon.flush_pacer import FlushPacer
from agent.daemon.process_index import ProcessIndex
from agent.daemon.prune import PruneResult, gather, pruned_sessions, record_prune, strip
from agent.daemon.quarantine import quarantine
from agent.daemon.shard_file import NewestShard, write_shard
from agent.daemon.signer import Chain, ChainSnapshot
from agent.files import Sharing
from agent.records import ENDED, Command, Session, SessionStatus, iso
from agent.shards import (
    COMMANDS,
    SESSIONS,
    StoreError,
    iter_sessions,
    list_shards,
    read_shard,
    read_shard_digest,
)

log = logging.getLogger(__name__)

SHARD_MAX_COMMANDS = 2_000
SHARD_MAX_BYTES = 1 << 20  # of JSON text: a flush rewrites about this much at most
# Never pruned, whatever is asked: a session still going on.
KEPT_STATUSES = frozenset({SessionStatus.LIVE, SessionStatus.PENDING})


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What `audit-agent status` shows of the store writer."""

    store_dir: Path
    live_sessions: tuple[Session, ...]  # every session not ended, flushed or not
    pending_commands: int  # accepted, not yet flushed
    flushed_at: float | None
    flush_errors: int
    failing: bool  # the last write failed
    chain: ChainSnapshot | None = None


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
        chain: Chain | None = None,
        disk: DiskGuard | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.sharing = sharing or Sharing()
        self.chain = chain
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
        self._write_lock = threading.Lock()  # the flushes and the prunes
        self._pending: dict[str, _Pending] = {}
        self._sessions: dict[str, Session] = {}  # newest state, flushed or not
        self.processes = ProcessIndex()  # what the ingest asks: find(), claims()
        self._shard: NewestShard | None = None  # the newest, being written
        self._shards_of: dict[str, set[str]] = {}  # session id -> shard names
        self._retired: set[str] = set()  # pruned session ids, never given again
        self._next_shard = 1
        self._pacer = FlushPacer(flush_interval_s)
        self._failures = WriteFailures(f"store shard in {store_dir}", disk)
        self._next_of_tag: dict[str, int] = {}  # tag -> the N to try first
        self._thread: threading.Thread | None = None
        self.flush_errors = 0
        self.flush_error_at: float | None = None
        self.flushed_at: float | None = None

    # -- lifecycle -------------------------------------------------------

    def open(self) -> None:
        """Load every shard's sessions; quarantine the ones that are unusable."""
        self.sharing.directory(self.store_dir, (".json",))
        shards = list_shards(self.store_dir)
        self._retired = pruned_sessions(self.store_dir)
        walk = self.chain.opening(self.store_dir) if self.chain is not None else None
        newest: tuple[Path, dict[str, dict[str, Any]]] | None = None
        for path in shards:
            self._next_shard = int(path.stem) + 1
            try:
                tables, digest = read_shard_digest(path)
                sessions = list(iter_sessions(tables, path))
            except StoreError as e:
                self._quarantine(path, str(e))
                newest = None
                continue
            if walk is not None:
                walk.feed(path.name, digest, tables)
            if self._retired & self._index(path.name, tables):
                # A prune recorded but not carried out to the end (a crash).
                tables, _ = strip(tables, self._retired)
                write_shard(path, tables, self.sharing.file_mode)
                self._index(path.name, tables)
            for session in sessions:
                if session.id not in self._retired:
                    self._remember(session)
            last, terminated = stored_state(tables)
            self._access_seq = max(self._access_seq, last)
            self.terminated.update(terminated)
            newest = (path, tables)
        if newest is not None:
            path, tables = newest
            self._shard = NewestShard(path, tables, self.sharing.file_mode)
            if self._full():
                self._shard = None
        if self.chain is not None and walk is not None:
            self.chain.opened(walk)

    def _index(self, name: str, tables: dict[str, dict[str, Any]]) -> set[str]:
        """Note which sessions the shard holds documents of; their ids."""
        here = {str(d.get("id")) for d in tables.get(SESSIONS, {}).values()}
        here |= {str(d.get("session")) for d in tables.get(COMMANDS, {}).values()}
        for sid in here:
            self._shards_of.setdefault(sid, set()).add(name)
        return here

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-writer")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Flush what is pending and stop the writer thread."""
        self._pacer.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush(stopping=True)

    def __enter__(self) -> Store:
        self.open()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the ingest asks --------------------------------------------

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
        """The tag itself, or `tag~N` when an earlier session used the tag."""
        with self._lock:  # from the last N of the tag: no lookup per earlier use
            n = self._next_of_tag.get(tag, 1)
            sid = f"{tag}~{n}" if n > 1 else tag
            while sid in self._sessions or sid in self._retired:
                n += 1
                sid = f"{tag}~{n}"
            self._next_of_tag[tag] = n
            return sid

    def submit(
        self, session: Session, commands: list[Command] | tuple[Command, ...] = ()
    ) -> None:
        """Queue a session's new state and the commands that led to it."""
        with self._lock:
            if session.id in self._retired:
                return  # pruned: its log, if still followed, adds nothing back
            pending = self._pending.get(session.id)
            if pending is None:
                pending = self._pending[session.id] = _Pending(session)
            pending.session = session
            pending.commands.extend(commands)
            self._remember(session)
        if commands:
            self._pacer.soon()

    def shards_holding(self, session_id: str) -> set[str]:
        """The names of the shards that hold documents of this session."""
        with self._write_lock:
            return set(self._shards_of.get(session_id, ()))

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
            chain=self.chain.snapshot() if self.chain is not None else None,
        )

    # -- writing ---------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commands submitted inside are this thread's to flush, at its end or at
        batch_due() (agent/daemon/flush_pacer.py); a failing store's, the writer's."""
        self._pacer.hold()
        try:
            yield
        finally:
            if self._pacer.release():
                if self._failures.in_a_row:
                    self._pacer.soon()
                else:
                    self._flush_counted()

    def batch_due(self) -> float | None:
        """When a batch()'s commands are due (time.monotonic()); None: none wait."""
        return self._pacer.held_due()

    def _run(self) -> None:
        while self._pacer.wait():
            self._flush_counted()

    def _flush_counted(self) -> None:
        try:
            self.flush()
        except OSError as e:
            self.flush_errors += 1
            self.flush_error_at = time.time()
            self._failures.failed(e)  # what is not written waits in memory
            return
        self._failures.worked()

    def flush(self, stopping: bool = False) -> None:
        """Write every pending update to the newest shard in one atomic write.

        With nothing pending, a checkpoint that is due is still written.
        """
        # All under the write lock, as two threads flush (writer, batch()): an
        # older batch written or told (the callbacks only queue) after a newer
        # one would undo its states, or the events sink would skip it (by seq).
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                access, self._access = self._access, []
            if not batch and not access:
                due = self.chain is not None and self.chain.due(False, stopping)
                if due and self._shard is not None:
                    self._write({}, [], stopping)
                return
            try:
                self._write(batch, access, stopping)
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

    def _write(
        self,
        batch: dict[str, _Pending],
        access: list[AccessEntry],
        stopping: bool = False,
    ) -> None:
        if self._shard is None or self._full():
            self._new_shard()
        shard = self._shard
        assert shard is not None
        chain, name, file = self.chain, shard.path.name, shard.file
        head = chain.head if chain is not None else None
        new_docs: list[dict[str, Any]] = []
        updates: dict[int, dict[str, Any]] = {}  # by document id: in place
        inserts: dict[str, dict[str, Any]] = {}  # by session id: new documents
        checkpoint = None
        try:
            for sid, pending in batch.items():
                # The commands first: the session's state is the one after them.
                docs = [c.to_document() for c in pending.commands]
                if chain is not None:
                    for command_doc in docs:
                        chain.link(COMMAND, command_doc)
                new_docs.extend(docs)
                doc = pending.session.to_document()
                doc_id = shard.doc_ids.get(sid)
                if chain is not None:
                    fields = chained_fields(SESSION, doc)
                    if doc_id is None or shard.linked.get(sid) != fields:
                        chain.link(SESSION, doc)
                        shard.linked[sid] = fields
                        doc_id = None  # a new state: a new document
                if doc_id is None:
                    inserts[sid] = doc
                else:  # merged below: its link stays (what changed is not chained)
                    updates[doc_id] = doc
                self._shards_of.setdefault(sid, set()).add(name)
            new_ids = file.append(SESSIONS, inserts.values())
            shard.doc_ids.update(zip(inserts, new_ids, strict=True))
            for doc_id, doc in updates.items():
                file.update(SESSIONS, doc_id, doc)
            if new_docs:
                file.append(COMMANDS, new_docs)
                shard.entries += len(new_docs)
            if access:
                # Counted with the commands: a flood of page views seals shards too.
                file.append(ACCESS, (e.to_document() for e in access))
                shard.entries += len(access)
            sealing = self._full()
            if chain is not None and chain.due(sealing, stopping):
                reason = "seal" if sealing else "stop" if stopping else "interval"
                checkpoint = chain.checkpoint(reason)
                file.append(CHECKPOINTS, [checkpoint])
            file.flush()
        except BaseException:
            if chain is not None and head is not None:
                chain.head = head  # the links written to memory only are void
            raise
        if chain is not None and checkpoint is not None:
            chain.committed(checkpoint)

    # -- pruning -----------------------------------------------------------

    def prune(
        self,
        session_ids: list[str],
        *,
        by: str,
        reason: str,
        casts: Sequence[str] = (),
        quarantine: Sequence[str] = (),
        dry_run: bool = False,
    ) -> PruneResult:
        """Take these (ended) sessions out of every shard, behind a signed record.

        The record (agent/daemon/prune.py) also names the recordings and
        quarantined files the caller removes once this returns.
        """
        if self.chain is not None and self.chain.problem is not None and not dry_run:
            raise StoreError(f"not pruning: {self.chain.problem}")
        with self._write_lock:
            with self._lock:
                wanted = {
                    s
                    for s in session_ids
                    if s in self._sessions
                    and self._sessions[s].status not in KEPT_STATUSES
                }
            names = sorted(set().union(*(self._shards_of.get(s, ()) for s in wanted)))
            newest = self._shard.file if self._shard is not None else None
            removed, rewrites = gather(
                self.store_dir,
                names,
                wanted,
                (newest.path.name, newest.read()) if newest is not None else None,
            )
            record = None
            if dry_run or not (wanted or casts or quarantine):
                return PruneResult(tuple(sorted(wanted)), removed, 0, None)
            if self.chain is not None:  # durable before any shard changes
                record = record_prune(
                    self.chain.signer,
                    self.store_dir,
                    self.sharing.file_mode,
                    by=by,
                    reason=reason,
                    sessions=sorted(wanted),
                    removed=removed,
                    files=(list(casts), list(quarantine)),
                )
            for path, stripped in rewrites:
                if newest is not None and path == newest.path:
                    self._shard = NewestShard(path, stripped, self.sharing.file_mode)
                    self._shard.file.dirty = True
                    self._shard.file.flush()
                else:
                    write_shard(path, stripped, self.sharing.file_mode)
            with self._lock:
                for sid in wanted:
                    self.processes.remove(self._sessions.pop(sid))
                    self._shards_of.pop(sid, None)
                    self._retired.add(sid)
            return PruneResult(tuple(sorted(wanted)), removed, len(rewrites), record)

    def _full(self) -> bool:
        shard = self._shard
        if shard is None:
            return False
        size = shard.file.size
        return shard.entries >= SHARD_MAX_COMMANDS or size >= SHARD_MAX_BYTES

    def _reload_newest(self) -> None:
        if self._shard is None:
            return
        path = self._shard.path
        try:
            tables = read_shard(path) if path.exists() else None
            self._shard = NewestShard(path, tables, self.sharing.file_mode)
        except StoreError:
            self._shard = None

    def _new_shard(self) -> None:
        path = self.store_dir / f"{self._next_shard:08d}.json"
        self._next_shard += 1
        self._shard = NewestShard(path, None, self.sharing.file_mode)

    def _remember(self, session: Session) -> None:
        self._sessions[session.id] = session
        self.processes.add(session)

    def _quarantine(self, path: Path, why: str) -> None:
        target = quarantine(path, self.quarantine_dir, move=True)
        log.error("%s; moved it to %s and carry on without it", why, target)
