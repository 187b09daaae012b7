"""The Reader (agent/reading.py) over the fleet store: every bastion's record.

What it gives is what the local reader gives (agent/fleet_records.py builds
the records from the rows). Commands stream through a server-side
cursor, so an export of millions holds a few thousand at a time; sessions
are fetched once each. The live feed LISTENs for the notifications the
commands table sends at each commit (agent/fleet_schema.py) and fetches the
commands they name.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from typing import Any

import psycopg

from agent.access_log import AccessEntry
from agent.casts import CastError
from agent.fleet_config import FleetConfig
from agent.fleet_db import connect, describe, explain, one_line
from agent.fleet_queries import (
    AUDITOR_SAMPLE_SQL,
    COMMAND_COLUMNS,
    SESSION_COLUMNS,
    Commands,
    access_sql,
    commands_sql,
    count_commands_sql,
    count_sessions_sql,
    counted_page_sql,
    sessions_sql,
)
from agent.fleet_records import access_of, command_of, sample_of, session_of
from agent.fleet_schema import NOTIFY_CHANNEL, check_version
from agent.reading import Follower, Reader, ReadError, ReadTimeout, Row, Selection
from agent.records import Command, Session

FETCH_ROWS = 5000  # commands per round trip of the server-side cursor
RECONNECT_LOOKBACK = "60 seconds"  # re-read after a lost feed connection
WALK_S = 0.5  # a walk back in time for a page of a common match, at most
SAMPLE_MAX_AGE_S = 600.0  # then pg_stats is read again (ANALYZE renews it)


def _searches_text(selection: Selection) -> bool:
    return selection.contains is not None or selection.regex is not None


class FleetReader(Reader):
    """`statement_timeout_s`: every query stops there (ReadTimeout); `read_only`:
    every transaction is read-only, whatever the role may do."""

    fleet = True

    def __init__(
        self,
        database: str,
        fleet: FleetConfig,
        statement_timeout_s: float | None = None,
        read_only: bool = False,
    ) -> None:
        self.database = database
        self.config = fleet
        self.where = describe(database)
        self.errors: list[str] = []
        self.conn = connect(fleet, database, autocommit=True)
        try:
            check_version(self.conn, self.where)
            if statement_timeout_s is not None:
                self._set("statement_timeout", f"{int(statement_timeout_s * 1000)}ms")
            if read_only:
                self._set("default_transaction_read_only", "on")
                # Short queries: compiling them (about 30 ms) costs more
                # than it saves (seen in EXPLAIN ANALYZE of a page).
                self._set("jit", "off")
            row = self.conn.execute(
                "SELECT has_table_privilege('auditor_commands', 'SELECT')"
            ).fetchone()
        except BaseException:
            self.conn.close()
            raise
        self._sessions: dict[tuple[str, str], Session] = {}
        self._valid_regex: str | None = None  # the last one PostgreSQL compiled
        self._auditor = bool(row and row[0])
        self._commands = Commands("auditor_commands" if self._auditor else "commands")
        self._sample_read = -SAMPLE_MAX_AGE_S  # monotonic time

    def _set(self, name: str, value: str) -> None:
        try:
            self.conn.execute("SELECT set_config(%s, %s, false)", [name, value])
        except psycopg.Error as e:
            raise explain(e, self.where) from e

    def close(self) -> None:
        self.conn.close()

    def forget(self) -> None:
        """Drop the sessions kept since the last call: read them again."""
        self._sessions = {}

    def _failure(self, error: psycopg.Error) -> Exception:
        if isinstance(error, psycopg.errors.QueryCanceled):
            return ReadTimeout(f"fleet database {self.where}: the query ran too long")
        if isinstance(error, psycopg.errors.InvalidRegularExpression):
            return ReadError(f"not a regular expression: {one_line(error)}")
        return explain(error, self.where)

    def _query(
        self,
        sql: str,
        params: list[Any],
        timeout_s: float | None = None,
        walk: bool = False,
        own_plan: bool = False,
    ) -> list[tuple[Any, ...]]:
        """`timeout_s`: this query's own statement timeout (shorter, for a try).

        `own_plan`: planned for its values, never prepared. A text search's
        best plan depends on its pattern; psycopg prepares a statement run
        five times, and PostgreSQL's generic plan of it, chosen after five
        more, cannot see how common the pattern is: a regex matching none of
        1,000,000 commands took 106 to 122 ms, then 160 to 195 ms so.

        `walk`: only an index walk will do. A walk back in time is asked for
        when there are many hits, but the planner, guessing few (it cannot
        see into a regex), read and sorted a whole index for them: a regex
        matching every 70th command of 1,000,000 took 300 to 480 ms so, and
        2 ms walking.
        """
        try:
            with self.conn.transaction():
                if timeout_s is not None:
                    self.conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)",
                        [f"{max(1, int(timeout_s * 1000))}ms"],
                    )
                if walk:
                    self.conn.execute(
                        "SELECT set_config('enable_seqscan', 'off', true),"
                        " set_config('enable_bitmapscan', 'off', true),"
                        " set_config('enable_sort', 'off', true)"
                    )
                prepare = False if own_plan else None
                return list(self.conn.execute(sql, params, prepare=prepare).fetchall())
        except psycopg.Error as e:
            raise self._failure(e) from e

    def _check_regex(self, selection: Selection) -> None:
        """ReadError now if the selection's regex is not a regular expression.

        The search itself may never compile it: its LIKE prefilter can rule
        out every row, and under a generic plan (psycopg prepares a statement
        run five times) PostgreSQL compiles a regex only when a row reaches it.
        """
        regex = selection.regex
        if regex is not None and regex != self._valid_regex:
            self._query("SELECT '' ~ %s", [regex])
            self._valid_regex = regex

    def _commands_for(self, selection: Selection) -> Commands:
        """Where to read the commands; for a regex, with PostgreSQL's sample."""
        now = time.monotonic()
        stale = now - self._sample_read > SAMPLE_MAX_AGE_S
        if selection.regex is not None and self._auditor and stale:
            rows = self._query(AUDITOR_SAMPLE_SQL, [])
            sample = sample_of(rows[0] if rows else None)
            self._commands = Commands(self._commands.relation, sample)
            self._sample_read = now
        return self._commands

    def _count(self, sql: str, params: list[Any], own_plan: bool = False) -> int:
        return int(self._query(sql, params, own_plan=own_plan)[0][0])

    def can_write(self) -> bool:
        """Whether this role may write any of the fleet's tables."""
        rows = self._query(
            "SELECT bool_or(has_table_privilege(t, p)) FROM unnest(%s::text[]) t,"
            " unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p",
            [["bastions", "sessions", "commands", "recordings", "access_log"]],
        )
        return bool(rows[0][0])

    def sessions(
        self,
        selection: Selection,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Session]:
        sql, params = sessions_sql(selection, limit, offset, newest_first)
        return [self._remember(session_of(r)) for r in self._query(sql, params)]

    def count_sessions(self, selection: Selection) -> int:
        return self._count(*count_sessions_sql(selection))

    def session(self, bastion: str, session_id: str) -> Session | None:
        """The session of this key, as the fleet has it now."""
        self._sessions.pop((bastion, session_id), None)
        return self._session(bastion, session_id)

    def _remember(self, session: Session) -> Session:
        assert session.bastion is not None
        self._sessions[(session.bastion, session.id)] = session
        return session

    def _session(self, bastion: str, session_id: str) -> Session | None:
        known = self._sessions.get((bastion, session_id))
        if known is None:
            rows = self._query(
                f"SELECT {SESSION_COLUMNS} FROM sessions s"
                " WHERE s.bastion = %s AND s.id = %s",
                [bastion, session_id],
            )
            if rows:
                known = self._remember(session_of(rows[0]))
        return known

    def commands(
        self,
        selection: Selection,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
        many: bool = False,
    ) -> Iterator[Row]:
        """`many`: the caller knows the selection matches many commands (a
        count reached its bound), so a page of the newest is looked for by
        walking back in time; a walk that finds too few in WALK_S (the many
        are old) gives way to the usual plan."""
        self._check_regex(selection)
        commands = self._commands_for(selection)
        text = _searches_text(selection)
        if limit is not None and limit <= FETCH_ROWS:  # one round trip
            if many and newest_first:
                sql, params = commands_sql(
                    selection, limit, offset, True, walk=True, commands=commands
                )
                try:
                    rows = self._query(sql, params, WALK_S, walk=True, own_plan=text)
                    return iter(self._rows(rows))
                except ReadTimeout:
                    pass
            sql, params = commands_sql(
                selection, limit, offset, newest_first, commands=commands
            )
            return iter(self._rows(self._query(sql, params, own_plan=text)))
        sql, params = commands_sql(
            selection, limit, offset, newest_first, commands=commands
        )
        return self._streamed(sql, params)

    def _streamed(self, sql: str, params: list[Any]) -> Iterator[Row]:
        try:
            with self.conn.transaction():
                cur = self.conn.cursor(name="bastion_audit_commands")
                cur.itersize = FETCH_ROWS
                cur.execute(sql, params)
                while batch := cur.fetchmany(FETCH_ROWS):
                    yield from self._rows(batch)
        except psycopg.Error as e:
            raise self._failure(e) from e

    def _rows(self, rows: list[tuple[Any, ...]]) -> list[Row]:
        self._prefetch({(r[-1], r[0]) for r in rows})
        return [(command_of(r), self._session(r[-1], r[0])) for r in rows]

    def _prefetch(self, keys: set[tuple[str, str]]) -> None:
        """The sessions of these (bastion, id) keys not known yet, in one query."""
        missing = sorted(k for k in keys if k not in self._sessions)
        if not missing:
            return
        for row in self._query(
            f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE (s.bastion, s.id)"
            " IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            [[b for b, _ in missing], [sid for _, sid in missing]],
        ):
            self._remember(session_of(row))

    def count_commands(self, selection: Selection, at_most: int | None = None) -> int:
        self._check_regex(selection)
        commands = self._commands_for(selection)
        sql, params = count_commands_sql(selection, at_most, commands)
        return self._count(sql, params, own_plan=_searches_text(selection))

    def counted_page(
        self, selection: Selection, limit: int, offset: int, at_most: int
    ) -> tuple[int, list[Row]]:
        """The newest-first page at `offset`, and how many match, up to `at_most`.

        Fewer: one scan of the matches gives both. As many (a common word):
        the page is found by walking back in time (`commands(many=True)`).
        """
        self._check_regex(selection)
        commands = self._commands_for(selection)
        sql, params = counted_page_sql(selection, limit, offset, at_most, commands)
        rows = self._query(sql, params, own_plan=_searches_text(selection))
        total = int(rows[0][0])
        if total < at_most:
            return total, self._rows([r[1:] for r in rows if r[1] is not None])
        return total, list(self.commands(selection, limit, offset, True, many=True))

    def session_commands(
        self, bastion: str, session_id: str, after: int = 0, limit: int | None = None
    ) -> list[Command]:
        """A session's commands past seq `after`, in seq order."""
        rows = self._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands c"
            " WHERE c.bastion = %s AND c.session = %s AND c.seq > %s ORDER BY c.seq"
            + (" LIMIT %s" if limit is not None else ""),
            [bastion, session_id, after, *([limit] if limit is not None else [])],
        )
        return [command_of(r) for r in rows]

    def access(self, limit: int | None = None, offset: int = 0) -> list[AccessEntry]:
        return [access_of(r) for r in self._query(*access_sql(limit, offset))]

    def count_access(self) -> int:
        return self._count("SELECT count(*) FROM access_log", [])

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

    def recording_since(
        self, bastion: str, session_id: str, offset: int, max_bytes: int
    ) -> bytes:
        """The recording's bytes from `offset` on, at most `max_bytes` (live view).

        The chunks' sizes come first (a small look), and only the chunks
        holding something past `offset` are fetched and inflated.
        """
        sizes = self._query(
            "SELECT chunk, raw_bytes FROM recordings"
            " WHERE bastion = %s AND session = %s ORDER BY chunk",
            [bastion, session_id],
        )
        wanted, starts, at = [], {}, 0
        for n, (chunk, size) in enumerate(sizes):
            if chunk != n:
                break  # a chunk not shipped yet: what follows waits for it
            if at + size > offset and at < offset + max_bytes:
                wanted.append(chunk)
                starts[chunk] = at
            at += size
        if not wanted:
            return b""
        rows = self._query(
            "SELECT chunk, data FROM recordings"
            " WHERE bastion = %s AND session = %s AND chunk = ANY(%s) ORDER BY chunk",
            [bastion, session_id, wanted],
        )
        data = b"".join(zlib.decompress(bytes(d)) for _, d in rows)
        skip = offset - starts[wanted[0]]
        return data[skip : skip + max_bytes]

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
        newest = self.reader.commands(
            self.selection, limit=max(0, self.last), newest_first=True
        )
        return list(reversed(list(newest)))

    def _recent(self) -> list[Row]:
        rows = self.reader._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands c WHERE c.received_at >"
            f" now() - interval '{RECONNECT_LOOKBACK}'"
            " ORDER BY c.time, c.bastion, c.session, c.seq",
            [],
        )
        return self.reader._rows(rows)

    def _fetch(self, bastion: str, session_id: str, after: int) -> list[Row]:
        self.reader._sessions.pop((bastion, session_id), None)  # its state moved on
        rows = self.reader._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands c"
            " WHERE c.bastion = %s AND c.session = %s AND c.seq > %s ORDER BY c.seq",
            [bastion, session_id, after],
        )
        return self.reader._rows(rows)
