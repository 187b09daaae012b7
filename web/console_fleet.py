"""The console over the fleet store: every bastion's sessions in one console.

`FleetConsole` is a ConsoleReader (web/console_store.py) over the shared
Reader's fleet backend (agent/fleet_reader.py), chosen by `[web.fleet]`:
sessions are keyed by (bastion, id), pages are counted and the newest
first, a search is the trigram index's (a substring) or PostgreSQL's POSIX
regular expression, and the access log is the fleet's `access_log`, which
each agent ships from its own store.

Each request takes a FleetReader (one connection) from a small pool and
gives it back; one that failed is closed, and a request whose connection
had gone (the server restarted) is tried once more on a new one. Every
query runs under a statement timeout (a search's: SEARCH_DEADLINE_S, as the
local search's deadline), so a costly pattern cannot hold a worker or the
server; the connection's transactions are read-only, and a role that may
write the fleet's tables is refused at start.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from agent import AgentError
from agent.casts import CastError
from agent.fleet_db import FleetDbError
from agent.fleet_reader import FleetReader
from agent.reading import ReadError, ReadTimeout, Selection
from agent.records import Command, Session, iso
from agent.web_config import WebFleet
from web.console_store import (
    PATTERN_MAX_CHARS,
    SEARCH_DEADLINE_S,
    Hit,
    Page,
    Search,
    SearchError,
    SessionFilter,
    StoreUnavailable,
)

T = TypeVar("T")
# A search counts its hits up to this (or past the page asked for), then
# says "more than": a common word's count costs what finding them all does.
COUNT_MAX = 1_000
IDLE_MAX = 16  # connections kept between requests (audit-web's threads)


class FleetConsole:
    """ConsoleReader over the fleet store; safe to share between request threads."""

    fleet = True

    def __init__(self, settings: WebFleet) -> None:
        self.settings = settings
        self.config = settings.fleet_config()
        self.errors: list[str] = []
        self._idle: list[FleetReader] = []
        self._lock = threading.Lock()

    # -- connections -----------------------------------------------------

    def _connect(self) -> FleetReader:
        """A new connection; one of a role that may write is refused."""
        try:
            reader = FleetReader(
                self.settings.database,
                self.config,
                statement_timeout_s=SEARCH_DEADLINE_S,
                read_only=True,
            )
        except AgentError as e:  # refused, away, another schema, a password file
            raise StoreUnavailable(str(e)) from e
        try:
            writes = reader.can_write()
        except AgentError as e:
            reader.close()
            raise StoreUnavailable(str(e)) from e
        if writes:
            reader.close()
            raise StoreUnavailable(
                f"fleet database {reader.where}: audit-web's role may write the "
                "fleet store; give it the role bastion_audit_auditor only"
            )
        return reader

    @contextlib.contextmanager
    def _reader(self) -> Iterator[FleetReader]:
        with self._lock:
            reader = self._idle.pop() if self._idle else None
        if reader is None:
            reader = self._connect()
        reader.forget()
        try:
            yield reader
        except (ReadError, SearchError, CastError):
            self._give_back(reader)  # the query's fault: the connection is fine
            raise
        except BaseException:
            reader.close()
            raise
        self._give_back(reader)

    def _give_back(self, reader: FleetReader) -> None:
        with self._lock:
            if len(self._idle) < IDLE_MAX:
                self._idle.append(reader)
                return
        reader.close()

    def _use(self, work: Callable[[FleetReader], T]) -> T:
        """`work` with a reader; once more on a new connection if the old had gone."""
        for attempt in (1, 2):
            try:
                with self._reader() as reader:
                    return work(reader)
            except FleetDbError as e:
                if not e.transient or attempt == 2:
                    raise StoreUnavailable(str(e)) from e
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.close()

    # -- what the console asks -------------------------------------------

    def session_page(self, f: SessionFilter, offset: int, limit: int) -> Page:
        selection = _session_selection(f)
        if selection is None:
            return Page([], 0, offset, limit)

        def page(reader: FleetReader) -> Page:
            items = reader.sessions(selection, limit, offset, newest_first=True)
            return Page(items, reader.count_sessions(selection), offset, limit)

        try:
            return self._use(page)
        except ReadTimeout:
            return Page([], 0, offset, limit, stopped=True)

    def session(self, sid: str, bastion: str | None = None) -> Session | None:
        if bastion is None:
            return None  # the fleet's sessions are named with their bastion
        return self._use(lambda reader: reader.session(bastion, sid))

    def session_commands(self, session: Session, after: int = 0) -> list[Command]:
        assert session.bastion is not None
        return self._use(
            lambda r: r.session_commands(str(session.bastion), session.id, after)
        )

    def search(self, q: Search, offset: int, limit: int) -> Page:
        selection = _search_selection(q)
        if selection is None:
            return Page([], 0, offset, limit)

        def page(reader: FleetReader) -> Page:
            bound = max(COUNT_MAX, offset + limit)  # past this page, at least
            total, rows = reader.counted_page(selection, limit, offset, bound + 1)
            hits = [Hit(c, s) for c, s in rows]
            more = total > bound
            return Page(hits, min(total, bound), offset, limit, more=more)

        try:
            return self._use(page)
        except ReadTimeout:
            return Page([], 0, offset, limit, stopped=True)
        except ReadError as e:
            raise SearchError(str(e)) from e

    def access_page(self, offset: int, limit: int) -> Page:
        def page(reader: FleetReader) -> Page:
            entries = reader.access(limit, offset)
            return Page(list(entries), reader.count_access(), offset, limit)

        return self._use(page)

    def recording(self, session: Session) -> bytes:
        return self._use(lambda r: r.cast(session.id, session.bastion))

    def recording_since(self, session: Session, offset: int, max_bytes: int) -> bytes:
        assert session.bastion is not None
        bastion = session.bastion
        return self._use(
            lambda r: r.recording_since(bastion, session.id, offset, max_bytes)
        )


def _owner(
    owner: str | None, owner_bastion: str | None, user: str, bastion: str
) -> tuple[str | None, str | None] | None:
    """The bastion user and bastion to select; None when nothing can match."""
    if owner is None:
        return user or None, bastion or None
    if (user and user != owner) or (bastion and bastion != owner_bastion):
        return None  # a non-auditor asking for someone else's
    return owner, owner_bastion


def _session_selection(f: SessionFilter) -> Selection | None:
    chosen = _owner(f.owner, f.owner_bastion, f.bastion_user, f.bastion)
    if chosen is None:
        return None
    user, bastion = chosen
    return Selection(
        bastion_user=user,
        bastion=bastion,
        remote_user=f.remote_user or None,
        host_named=f.host or None,
        since=iso(f.since) if f.since is not None else None,
        until=iso(f.until) if f.until is not None else None,
        status=f.status or None,
        origin=f.origin or None,
        recorder=f.recorder or None,
        having=f.text or None,
    )


def _search_selection(q: Search) -> Selection | None:
    if not q.text:
        raise SearchError("type something to search for")
    if len(q.text) > PATTERN_MAX_CHARS:
        raise SearchError(f"at most {PATTERN_MAX_CHARS} characters, please")
    chosen = _owner(q.owner, q.owner_bastion, "", q.bastion)
    if chosen is None:
        return None
    user, bastion = chosen
    try:
        return Selection(
            bastion_user=user,
            bastion=bastion,
            contains=None if q.regex else q.text,
            regex=q.text if q.regex else None,
        )
    except ReadError as e:
        raise SearchError(str(e)) from e
