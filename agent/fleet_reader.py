"""The Reader (agent/reading.py) over the fleet store: every bastion's record.

What it gives is what the local reader gives, built by the same records
(Session.from_document, Command.from_document) from the columns the shipper
filled, plus each session's `bastion`. Commands stream through a server-side
cursor, so an export of millions holds a few thousand at a time; sessions
are fetched once each. The live feed LISTENs for the notifications the
commands table sends at each commit (agent/fleet_schema.py) and fetches the
commands they name.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from agent.casts import CastError
from agent.fleet_config import FleetConfig
from agent.fleet_db import connect, describe, explain
from agent.fleet_schema import NOTIFY_CHANNEL, check_version
from agent.reading import Follower, Reader, Row, Selection
from agent.records import Command, Session

FETCH_ROWS = 5000  # commands per round trip of the server-side cursor
RECONNECT_LOOKBACK = "60 seconds"  # re-read after a lost feed connection

_SESSION_COLUMNS = (
    "id, tag, bastion_user, remote_user, host, port, ssh_pid, tty, started_at,"
    " ended_at, status, end_reason, command_count, gaps, remote_command, origin,"
    " client_addr, inventory_host, remote_account, recorder, hash, extra,"
    " start_ticks, bastion"
)
_COMMAND_COLUMNS = (
    "c.session, c.seq, c.time, c.command, c.cancelled, c.kind, c.program, c.hash,"
    " c.extra, c.bastion"
)


def iso_of(dt: datetime) -> str:
    """A timestamptz as the store writes times: milliseconds and Z."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def session_of(row: tuple[Any, ...]) -> Session:
    names = [n.strip() for n in _SESSION_COLUMNS.split(",")]
    values = dict(zip(names, row, strict=True))
    doc = {k: v for k, v in values.items() if k not in ("extra", "start_ticks")}
    for key in ("started_at", "ended_at"):
        if doc[key] is not None:
            doc[key] = iso_of(doc[key])
    doc.update(values["extra"] or {})
    doc["_ingest"] = {"start_ticks": values["start_ticks"]}
    return Session.from_document(doc)


def command_of(row: tuple[Any, ...]) -> Command:
    session, seq, time, command, cancelled, kind, program, hash_, extra, _ = row
    doc: dict[str, Any] = {
        "session": session,
        "seq": seq,
        "time": iso_of(time),
        "command": command,
    }
    if cancelled:
        doc["cancelled"] = True
    doc["kind"] = kind
    for key, value in (("program", program), ("hash", hash_)):
        if value is not None:
            doc[key] = value
    doc.update(extra or {})
    return Command.from_document(doc)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _session_where(selection: Selection, alias: str) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    a = alias
    if selection.session:
        where.append(f"({a}.id = %s OR {a}.tag = %s)")
        params += [selection.session, selection.session]
    if selection.bastion:
        where.append(f"{a}.bastion = %s")
        params.append(selection.bastion)
    if selection.user:
        where.append(f"({a}.bastion_user = %s OR {a}.remote_user = %s)")
        params += [selection.user, selection.user]
    if selection.host:
        where.append(f"{a}.host = %s")
        params.append(selection.host)
    return where, params


class FleetReader(Reader):
    fleet = True

    def __init__(self, database: str, fleet: FleetConfig) -> None:
        self.database = database
        self.config = fleet
        self.where = describe(database)
        self.errors: list[str] = []
        self.conn = connect(fleet, database, autocommit=True)
        try:
            check_version(self.conn, self.where)
        except BaseException:
            self.conn.close()
            raise
        self._sessions: dict[tuple[str, str], Session] = {}

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        try:
            with self.conn.transaction():
                return list(self.conn.execute(sql, params).fetchall())
        except psycopg.Error as e:
            raise explain(e, self.where) from e

    def sessions(
        self, selection: Selection, limit: int | None = None, offset: int = 0
    ) -> list[Session]:
        where, params = _session_where(selection, "s")
        if selection.status:
            where.append("s.status = %s")
            params.append(selection.status)
        if selection.until:
            where.append("s.started_at <= %s::timestamptz")
            params.append(selection.until)
        if selection.since:
            where.append("coalesce(s.ended_at, now()) >= %s::timestamptz")
            params.append(selection.since)
        sql = (
            f"SELECT {_SESSION_COLUMNS} FROM sessions s"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY s.started_at, s.bastion, s.id"
            + (" LIMIT %s" if limit is not None else "")
            + " OFFSET %s"
        )
        params += [limit] if limit is not None else []
        params.append(offset)
        found = [self._remember(session_of(r)) for r in self._query(sql, params)]
        return found

    def _remember(self, session: Session) -> Session:
        assert session.bastion is not None
        self._sessions[(session.bastion, session.id)] = session
        return session

    def _session(self, bastion: str, session_id: str) -> Session | None:
        known = self._sessions.get((bastion, session_id))
        if known is None:
            rows = self._query(
                f"SELECT {_SESSION_COLUMNS} FROM sessions s"
                " WHERE s.bastion = %s AND s.id = %s",
                [bastion, session_id],
            )
            if rows:
                known = self._remember(session_of(rows[0]))
        return known

    def _command_sql(
        self, selection: Selection, limit: int | None, offset: int
    ) -> tuple[str, list[Any]]:
        # A search goes through the trigram index first: behind the OFFSET 0
        # fence the planner cannot choose to walk the time index instead and
        # filter, which it does for a LIMIT when it guesses many hits.
        text, text_params = [], []
        if selection.contains:
            text.append("command ILIKE %s")
            text_params.append(_like(selection.contains))
        if selection.regex:
            text.append("command ~ %s")
            text_params.append(selection.regex)
        source = "commands"
        if text:
            source = f"(SELECT * FROM commands WHERE {' AND '.join(text)} OFFSET 0)"
        where, params = _session_where(selection, "s")
        params = [*text_params, *params]
        if selection.since:
            where.append("c.time >= %s::timestamptz")
            params.append(selection.since)
        if selection.until:
            where.append("c.time <= %s::timestamptz")
            params.append(selection.until)
        sql = (
            f"SELECT {_COMMAND_COLUMNS} FROM {source} c"
            " JOIN sessions s ON s.bastion = c.bastion AND s.id = c.session"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY c.time, c.bastion, c.session, c.seq"
            + (" LIMIT %s" if limit is not None else "")
            + " OFFSET %s"
        )
        params += [limit] if limit is not None else []
        params.append(offset)
        return sql, params

    def commands(
        self, selection: Selection, limit: int | None = None, offset: int = 0
    ) -> Iterator[Row]:
        sql, params = self._command_sql(selection, limit, offset)
        try:
            with self.conn.transaction():
                cur = self.conn.cursor(name="bastion_audit_commands")
                cur.itersize = FETCH_ROWS
                cur.execute(sql, params)
                for row in cur:
                    yield command_of(row), self._session(row[-1], row[0])
        except psycopg.Error as e:
            raise explain(e, self.where) from e

    def cast(self, name: str, bastion: str | None = None) -> bytes:
        sql = "SELECT bastion, id FROM sessions WHERE (id = %s OR tag = %s)"
        params: list[Any] = [name, name]
        if bastion:
            sql += " AND bastion = %s"
            params.append(bastion)
        rows = self._query(sql + " ORDER BY bastion, id", params)
        exact = [r for r in rows if r[1] == name]
        rows = exact or rows
        if not rows:
            raise CastError(f"no session {name!r} in the fleet store {self.where}")
        if len(rows) > 1:
            names = ", ".join(f"{b}/{s}" for b, s in rows)
            raise CastError(
                f"{name!r} names {len(rows)} sessions ({names}): pick one"
                + ("" if bastion else " (--bastion)")
            )
        ((b, sid),) = rows
        chunks = self._query(
            "SELECT chunk, data FROM recordings WHERE bastion = %s AND session = %s"
            " ORDER BY chunk",
            [b, sid],
        )
        if not chunks:
            raise CastError(f"session {b}/{sid} has no recording in the fleet store")
        if [c for c, _ in chunks] != list(range(len(chunks))):
            raise CastError(f"the recording of {b}/{sid} is not complete yet")
        data = b"".join(zlib.decompress(bytes(d)) for _, d in chunks)
        end = data.rfind(b"\n")
        if end < 0:
            raise CastError(f"the recording of {b}/{sid} has no header yet")
        return data[: end + 1]

    def recording_bytes(self, session: Session) -> int | None:
        rows = self._query(
            "SELECT sum(raw_bytes) FROM recordings WHERE bastion = %s AND session = %s",
            [session.bastion, session.id],
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def follower(self, selection: Selection, last: int = 10) -> FleetFollower:
        return FleetFollower(self, selection, last)


class FleetFollower(Follower):
    """LISTEN for the commands table's notifications; fetch what they name."""

    def __init__(self, reader: FleetReader, selection: Selection, last: int) -> None:
        self.reader = reader
        self.selection = selection
        self.last = last
        self.errors: list[str] = []
        self.seen: dict[tuple[str, str], int] = {}  # (bastion, session) -> seq
        self.listener: Any = None
        self._first = True

    def _listen(self) -> None:
        self.listener = connect(
            self.reader.config, self.reader.database, autocommit=True
        )
        self.listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def _take(self, rows: list[Row]) -> list[Row]:
        new = []
        for command, session in rows:
            key = ((session.bastion or "") if session else "", command.session)
            if command.seq <= self.seen.get(key, 0):
                continue
            self.seen[key] = command.seq
            if self.selection.command_matches(command, session):
                new.append((command, session))
        return new

    def poll(self) -> list[Row]:
        if self._first:
            self._first = False
            self._listen()
            return self._take(self._initial())
        try:
            if self.listener is None:
                self._listen()
                return self._take(self._recent())
            names: dict[tuple[str, str], tuple[int, int]] = {}
            for note in self.listener.notifies(timeout=0, stop_after=10_000):
                doc = json.loads(note.payload)
                key = (str(doc["bastion"]), str(doc["session"]))
                first, last = int(doc["first"]), int(doc["seq"])
                old = names.get(key, (first, last))
                names[key] = (min(first, old[0]), max(last, old[1]))
            rows: list[Row] = []
            for (bastion, sid), (first, _) in names.items():
                after = self.seen.get((bastion, sid), first - 1)
                rows += self._fetch(bastion, sid, after)
            return self._take(rows)
        except psycopg.Error as e:
            message = str(explain(e, self.reader.where))
            if message not in self.errors:
                self.errors.append(message)
            self.close()
            return []

    def _initial(self) -> list[Row]:
        if self.selection.since:
            return list(self.reader.commands(self.selection))
        sql, params = self.reader._command_sql(self.selection, None, 0)
        sql = sql.replace(
            "ORDER BY c.time, c.bastion, c.session, c.seq",
            "ORDER BY c.time DESC, c.bastion DESC, c.session DESC, c.seq DESC",
        ).replace(" OFFSET %s", " LIMIT %s")
        params[-1] = max(0, self.last)
        rows = self.reader._query(sql, params)
        return [
            (command_of(r), self.reader._session(r[-1], r[0])) for r in reversed(rows)
        ]

    def _recent(self) -> list[Row]:
        rows = self.reader._query(
            f"SELECT {_COMMAND_COLUMNS} FROM commands c WHERE c.received_at >"
            f" now() - interval '{RECONNECT_LOOKBACK}'"
            " ORDER BY c.time, c.bastion, c.session, c.seq",
            [],
        )
        return self._rows(rows)

    def _fetch(self, bastion: str, session_id: str, after: int) -> list[Row]:
        self.reader._sessions.pop((bastion, session_id), None)  # its state moved on
        rows = self.reader._query(
            f"SELECT {_COMMAND_COLUMNS} FROM commands c"
            " WHERE c.bastion = %s AND c.session = %s AND c.seq > %s ORDER BY c.seq",
            [bastion, session_id, after],
        )
        return self._rows(rows)

    def _rows(self, rows: list[tuple[Any, ...]]) -> list[Row]:
        return [(command_of(r), self.reader._session(r[-1], r[0])) for r in rows]
