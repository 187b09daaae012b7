"""The shipper: this bastion's record into the fleet store, exactly once, in order.

One thread owns the connection. It reads what the store writer made durable
(agent/daemon/fleet_source.py) and writes it into PostgreSQL in batches, one
transaction each (agent/daemon/fleet_rows.py), then saves its position
beside the store. Two lanes, so that a long backlog (the database was away
for an hour) does not hold up live sessions:

- the backlog lane ships from the saved position, oldest first, a batch per
  round, and moves to the next shard once one is done;
- the live lane ships the newest shard's sessions whose every earlier
  command is in the fleet already (and only those: a session's commands
  arrive in seq order), noting the last seq in `ahead`.

Access-log entries travel with the backlog lane, in seq order, a shard's
all before the lane moves on (agent/daemon/fleet_source.py).

While the database is away or refuses, the agent records locally as before
(the local store is the buffer) and the shipper tries again every
`retry_interval_s`; its snapshot() says how far behind it is, in records and
seconds, for `audit-agent status`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from agent.access_log import AccessEntry
from agent.casts import CAST_SUFFIX, CASTS_DIR
from agent.daemon.cast_state import STATE_SUFFIX, CastState
from agent.daemon.fleet_rows import (
    CAST_CHUNK_BYTES,
    ConflictError,
    SessionState,
    check_identities,
    insert_access,
    insert_commands,
    register_bastion,
    shipped_cast_bytes,
    shipped_seqs,
    upsert_cast,
    upsert_sessions,
)
from agent.daemon.fleet_source import (
    CURSOR_FILE,
    Cursor,
    ShardContent,
    ShardCounts,
    read_content,
    shard_number,
    shards_from,
    signature,
)
from agent.fleet_config import FleetConfig
from agent.fleet_db import FleetDbError, connect, describe, explain
from agent.fleet_schema import SchemaError, check_version, migrate
from agent.records import Command, Session, parse_iso
from agent.shards import StoreError, list_shards

if TYPE_CHECKING:
    from agent.daemon.store import Store

log = logging.getLogger(__name__)

IDLE_WAKE_S = 1.0  # a round at least this often, woken or not
CAST_INTERVAL_S = 1.0  # recordings are shipped at most this often
SURVEY_INTERVAL_S = 1.0  # the lag is counted at most this often
REGISTER_INTERVAL_S = 60.0  # bastions.last_seen is refreshed this often
STOP_DEADLINE_S = 3.0  # a clean stop ships what it can for this long


class ShipState(StrEnum):
    """Where the shipper stands; `audit-agent status` shows the value."""

    STARTING = "starting"
    CAUGHT_UP = "caught up"
    SHIPPING = "shipping"  # a backlog is going out
    UNREACHABLE = "unreachable"  # the database is away: tried again
    BLOCKED = "blocked"  # refused (password, schema, conflict): needs a person


@dataclass(frozen=True, slots=True)
class ShipperSnapshot:
    """What `audit-agent status` shows of the shipper."""

    database: str  # user@host:port/dbname, never a password
    bastion: str
    state: ShipState
    lag_records: int  # commands in the local store not yet in the fleet
    lag_s: float  # age of the oldest of them
    shipped_commands: int
    shipped_sessions: int
    shipped_cast_bytes: int
    shipped_access: int  # access-log entries
    last_ok_at: float | None
    last_error: str | None
    last_error_at: float | None
    max_lag_s: float
    max_lag_records: int


class Shipper:
    """Owns the shipping thread and its connection; a context manager."""

    def __init__(self, data_dir: Path, fleet: FleetConfig) -> None:
        self.fleet = fleet
        self.bastion = fleet.bastion_id
        self.where = describe(fleet.database)
        self.store_dir = data_dir / "store"
        self.casts_dir = data_dir / CASTS_DIR
        self.cursor_path = data_dir / CURSOR_FILE
        self.cursor = Cursor.load(self.cursor_path, self.bastion)
        self._conn: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_try = 0.0
        self._registered_at = -REGISTER_INTERVAL_S
        self._cast_at = 0.0
        self._survey_at = -SURVEY_INTERVAL_S
        self._verified: set[str] = set()  # sessions whose stored identity matched
        self._backlog_states: dict[str, Any] = {}  # shipped state, cursor shard
        self._live_states: dict[str, Any] = {}  # shipped state, newest shard
        self._contents: dict[Path, ShardContent] = {}
        self._counts = ShardCounts()
        self._ahead_shipped = 0
        self.state = ShipState.STARTING
        self.blocked = False
        self.lag_records = 0
        self.lag_s = 0.0
        self.shipped_commands = 0
        self.shipped_sessions = 0
        self.shipped_cast_bytes = 0
        self.shipped_access = 0
        self.last_ok_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> Shipper:
        self._thread = threading.Thread(
            target=self._run, name="fleet-shipper", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def wake(self, *_: object) -> None:
        """Store callback (the flushing thread): a flush made something durable."""
        self._wake.set()

    def follow(self, store: Store) -> None:
        """Be woken by every flush of `store` that made commands durable, after
        whatever the store called already. Without it a round comes only every
        IDLE_WAKE_S, and the lag is that."""
        also = store.on_committed

        def committed(batch: list[tuple[Session, list[Command]]]) -> None:
            if also is not None:
                also(batch)
            self.wake()

        store.on_committed = committed

    def snapshot(self) -> ShipperSnapshot:
        return ShipperSnapshot(
            database=self.where,
            bastion=self.bastion,
            state=self.state,
            lag_records=self.lag_records,
            lag_s=self.lag_s,
            shipped_commands=self.shipped_commands,
            shipped_sessions=self.shipped_sessions,
            shipped_cast_bytes=self.shipped_cast_bytes,
            shipped_access=self.shipped_access,
            last_ok_at=self.last_ok_at,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            max_lag_s=self.fleet.max_lag_s,
            max_lag_records=self.fleet.max_lag_records,
        )

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = self._guarded_round()
            if not busy:
                self._wake.wait(IDLE_WAKE_S)
                self._wake.clear()
        deadline = time.monotonic() + STOP_DEADLINE_S
        while self._conn is not None and time.monotonic() < deadline:
            if not self._guarded_round():
                break

    def _guarded_round(self) -> bool:
        try:
            return self.round()
        except Exception:  # the daemon boundary for this thread
            log.exception("fleet: shipping round failed; going on")
            self._close()
            return False

    def round(self) -> bool:
        """One round of shipping; whether more is waiting right now."""
        busy = False
        if self._conn is None and time.monotonic() >= self._next_try:
            self._open()
        if self._conn is not None:
            try:
                busy = self._ship_backlog()
                self._ship_live()
                if time.monotonic() - self._cast_at >= CAST_INTERVAL_S:
                    self._cast_at = time.monotonic()
                    self._ship_casts()
            except (psycopg.Error, OSError, FleetDbError, ConflictError) as e:
                self._failed(e)
                self._close()
                busy = False
        self._survey(force=not busy)
        return busy

    def _open(self) -> None:
        try:
            # Autocommit: each transaction() below is a real transaction, and
            # a lone look (shipped_seqs) is not left open around them.
            conn = connect(self.fleet, autocommit=True)
            try:
                if self.fleet.migrate_on_start:
                    applied = migrate(conn)
                    if applied:
                        log.info("fleet: applied schema migrations %s", applied)
                check_version(conn, self.where)
            except BaseException:
                conn.close()
                raise
        except (FleetDbError, SchemaError, psycopg.Error) as e:
            self._failed(e)
            return
        self._conn = conn
        self._registered_at = -REGISTER_INTERVAL_S
        self._verified.clear()
        log.info("fleet: shipping to %s as bastion %r", self.where, self.bastion)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, FleetDbError):
            problem = error
        elif isinstance(error, (SchemaError, ConflictError)):
            problem = FleetDbError(str(error), transient=False)
        else:
            problem = explain(error, self.where)
        message = str(problem)
        self.state = ShipState.UNREACHABLE if problem.transient else ShipState.BLOCKED
        self.blocked = not problem.transient
        if message != self.last_error:
            log.error(
                "fleet: %s; the local store keeps everything, will retry", message
            )
        self.last_error = message
        self.last_error_at = time.time()
        self._next_try = time.monotonic() + self.fleet.retry_interval_s

    # -- writing ---------------------------------------------------------

    def _commit(
        self,
        states: list[SessionState],
        commands: list[Command],
        access: Sequence[AccessEntry] = (),
    ) -> None:
        """One transaction: the sessions first (the commands refer to them)."""
        with self._conn.transaction():
            cur = self._conn.cursor()
            if time.monotonic() - self._registered_at >= REGISTER_INTERVAL_S:
                register_bastion(cur, self.bastion, socket.gethostname())
                self._registered_at = time.monotonic()
            check_identities(cur, self.bastion, states, self._verified)
            upsert_sessions(cur, self.bastion, states)
            insert_commands(cur, self.bastion, commands)
            insert_access(cur, self.bastion, access)
        self.shipped_sessions += len(states)
        self.shipped_commands += len(commands)
        self.shipped_access += len(access)
        self.last_ok_at = time.time()
        self.blocked = False
        for state in states:
            sid = state.session.id
            if sid not in self.cursor.casts and self._cast(sid).exists():
                self.cursor.casts[sid] = -1  # how far: asked of the fleet store

    def _save(self) -> None:
        self.cursor.save(self.cursor_path, self.bastion)

    def _content(
        self, path: Path, after: int = 0, access_after: int = 0
    ) -> ShardContent | None:
        """The shard's content past doc id `after` and access seq `access_after`
        (cached while it is the same)."""
        known = self._contents.get(path)
        try:
            if (
                known is not None
                and known.signature == signature(path)
                and known.after <= after
                and known.access_after <= access_after
            ):
                return known
            content = read_content(path, after, access_after)
        except StoreError as e:
            log.error("fleet: %s; skipping it", e)
            return None
        if content is not None:
            self._contents = {p: c for p, c in self._contents.items() if p != path}
            self._contents[path] = content
            # Only the cursor's shard and the newest are worth keeping.
            while len(self._contents) > 2:
                del self._contents[next(iter(self._contents))]
        return content

    def _ship_backlog(self) -> bool:
        """One batch from the position on; whether more is waiting."""
        shards = shards_from(self.store_dir, max(self.cursor.shard, 1))
        if not shards:
            return False
        path, last = shards[0], shards[0] == shards[-1]
        number = shard_number(path)
        if number != self.cursor.shard:  # the next shard (or a quarantined one)
            self._enter_shard(number)
        content = self._content(path, self.cursor.doc, self.cursor.access)
        if content is None:
            if not last:
                self._enter_shard(shard_number(shards[1]))
            return not last
        pending = [(d, c) for d, c in content.commands if d > self.cursor.doc]
        changed = [
            s
            for sid, s in content.sessions.items()
            if self._backlog_states.get(sid) != s.session
        ]
        access = [e for e in content.access if e.seq > self.cursor.access]
        if not pending and not changed and not access:
            if last:
                if self.cursor.ahead:  # caught up: nothing is ahead any more
                    self.cursor.ahead.clear()
                    self._ahead_shipped = 0
                    self._save()
                self.state = ShipState.CAUGHT_UP
                return False
            self._enter_shard(shard_number(shards[1]))
            self._save()
            return True
        self.state = ShipState.SHIPPING if not last else ShipState.CAUGHT_UP
        batch = pending[: self.fleet.batch_size]
        ahead = self.cursor.ahead
        commands = [c for _, c in batch if c.seq > ahead.get(c.session, 0)]
        entries = access[: self.fleet.batch_size]
        self._commit(changed, commands, entries)
        if batch:
            self.cursor.doc = batch[-1][0]
        if entries:
            self.cursor.access = entries[-1].seq
        for state in changed:
            self._backlog_states[state.session.id] = state.session
        self._save()
        return len(pending) > len(batch) or len(access) > len(entries) or not last

    def _enter_shard(self, number: int) -> None:
        self.cursor.shard, self.cursor.doc = number, 0
        self._backlog_states = {}
        self._counts.forget_before(number)

    def _ship_live(self) -> None:
        """The newest shard's sessions that nothing older holds up."""
        shards = list_shards(self.store_dir)
        if not shards or shard_number(shards[-1]) <= self.cursor.shard:
            self._live_states = {}
            return
        content = self._content(shards[-1])
        if content is None:
            return
        changed = {
            sid: s
            for sid, s in content.sessions.items()
            if self._live_states.get(sid) != s.session
        }
        if not changed:
            return
        ahead = self.cursor.ahead
        unknown = [sid for sid in changed if sid not in ahead]
        known = dict(ahead)
        if unknown:
            known.update(shipped_seqs(self._conn.cursor(), self.bastion, unknown))
        by_session: dict[str, list[Command]] = defaultdict(list)
        for _, command in content.commands:
            if command.session in changed and command.seq > known[command.session]:
                by_session[command.session].append(command)
        states, commands = [], []
        for sid, state in changed.items():
            new = by_session.get(sid, [])
            first = known[sid] + 1
            contiguous = [c.seq for c in new] == list(range(first, first + len(new)))
            if contiguous and known[sid] + len(new) == state.session.command_count:
                states.append(state)
                commands.extend(new)
        if not states:
            return
        self._commit(states, commands)
        for state in states:
            ahead[state.session.id] = state.session.command_count
            self._live_states[state.session.id] = state.session
        self._ahead_shipped += len(commands)
        self._save()

    def _cast(self, session_id: str) -> Path:
        return self.casts_dir / f"{session_id}{CAST_SUFFIX}"

    def _ship_casts(self) -> None:
        """The committed part of each recording the fleet lacks, in chunks."""
        for sid in list(self.cursor.casts):
            state = CastState.load(self.casts_dir / f"{sid}{STATE_SUFFIX}")
            if state is None:
                continue
            shipped = self.cursor.casts[sid]
            if shipped < 0:
                shipped = shipped_cast_bytes(self._conn.cursor(), self.bastion, sid)
            if state.size > shipped:
                first = shipped // CAST_CHUNK_BYTES
                with open(self._cast(sid), "rb") as f:
                    f.seek(first * CAST_CHUNK_BYTES)
                    data = f.read(state.size - first * CAST_CHUNK_BYTES)
                with self._conn.transaction():
                    upsert_cast(self._conn.cursor(), self.bastion, sid, data, first)
                end = first * CAST_CHUNK_BYTES + len(data)
                self.shipped_cast_bytes += end - shipped
                shipped = end
            if state.closed and shipped >= state.size:
                del self.cursor.casts[sid]
            else:
                self.cursor.casts[sid] = shipped
            self._save()

    # -- how far behind --------------------------------------------------

    def _survey(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._survey_at < SURVEY_INTERVAL_S:
            return
        self._survey_at = now
        shards = shards_from(self.store_dir, max(self.cursor.shard, 1))
        content = self._content(shards[0], self.cursor.doc) if shards else None
        total = sum(self._counts.count(p) for p in shards[1:])
        if content is not None:
            total += content.count
            if content.number == self.cursor.shard:
                total -= self.cursor.doc
        self.lag_records = max(0, total - self._ahead_shipped)
        self.lag_s = 0.0
        if self.lag_records and shards:
            ahead = self.cursor.ahead
            for doc_id, command in content.commands if content else ():
                if doc_id > self.cursor.doc and command.seq > ahead.get(
                    command.session, 0
                ):
                    self.lag_s = max(0.0, time.time() - parse_iso(command.time))
                    break
