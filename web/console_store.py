"""What the console reads: sessions, commands, the access log, recordings.

`ConsoleReader` is what the console asks of a store: counted pages, the
newest first, a bounded search, the access log and the recordings. Two
of them: `LocalReader` here, agent/local_reader.py's Reader over this
bastion's shards, read-only through the agent's `read_group`, whose
snapshot is kept between requests: a shard is parsed again only when it
changed (inode, size, mtime), and the agent rewrites only the newest one,
so a request costs one small shard's parse plus the filtering, however
large the store is; and web/console_fleet.py's, over the fleet store
(agent/fleet_reader.py), where sessions are keyed by (bastion, id).

Searching is bounded: a regular expression runs under the `regex` module's
timeout, each match for a short step, and the whole search within
SEARCH_DEADLINE_S; a search stopped by the deadline says so and returns
what it found. The module's timeout is not exact: on a loaded machine it
was seen to end a match up to about five times later than asked, hence
short steps.
"""

from __future__ import annotations

import bisect
import gc
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent import local_reader
from agent.access_log import AccessEntry
from agent.casts import CastError, read_cast
from agent.reader import Snapshot, access_entries
from agent.records import Command, RecordError, Session, parse_iso
from agent.shards import COMMANDS, StoreError, iter_sessions, list_shards, read_shard
from web import WebError

SEARCH_DEADLINE_S = 2.0  # a whole search, regex or not
REGEX_STEP_S = 0.05  # one command's match, at most
SCAN_STEP_S = 0.5  # one scan of the joined commands up to its next match, at most
PATTERN_MAX_CHARS = 500


class SearchError(WebError):
    """A search that cannot run (a pattern that does not compile)."""


class StoreUnavailable(WebError):
    """The store cannot be read now (the fleet's is away): a 503, in one line."""


@dataclass(frozen=True, slots=True)
class SessionFilter:
    bastion_user: str = ""
    remote_user: str = ""
    host: str = ""
    since: float | None = None
    until: float | None = None
    status: str = ""
    origin: str = ""
    recorder: str = ""
    text: str = ""  # in any of its commands
    owner: str | None = None  # only this bastion user's (a non-auditor's own)
    bastion: str = ""  # the fleet's: only this bastion's sessions
    owner_bastion: str | None = None  # the fleet's: the owner's on this one only

    def matches(self, s: Session) -> bool:
        if self.owner is not None and s.bastion_user != self.owner:
            return False
        if self.bastion_user and s.bastion_user != self.bastion_user:
            return False
        if self.remote_user and s.remote_user != self.remote_user:
            return False
        if self.host and self.host not in (s.host, s.inventory_host):
            return False
        if self.status and s.status != self.status:
            return False
        if self.origin and (s.origin or "direct") != self.origin:
            return False
        if self.recorder and s.recorder != self.recorder:
            return False
        end = s.ended_at if s.ended_at is not None else time.time()
        if self.since is not None and end < self.since:
            return False
        return self.until is None or s.started_at <= self.until


@dataclass(frozen=True, slots=True)
class Search:
    text: str
    regex: bool = False
    owner: str | None = None  # only this bastion user's sessions
    bastion: str = ""  # the fleet's: only this bastion's sessions
    owner_bastion: str | None = None  # the fleet's: the owner's on this one only


@dataclass(frozen=True, slots=True)
class Hit:
    command: Command
    session: Session | None


@dataclass
class Page:
    items: list[Any]
    total: int
    offset: int
    limit: int
    stopped: bool = False  # the search's deadline ended it first
    more: bool = False  # `total` is where the count stopped: there are more

    @property
    def next_offset(self) -> int | None:
        end = self.offset + self.limit
        return end if end < self.total or (self.more and end <= self.total) else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset else None


class ConsoleReader(Protocol):
    errors: list[str]  # what could not be read at the last request
    fleet: bool  # sessions carry their bastion, and URLs name it

    def session_page(self, f: SessionFilter, offset: int, limit: int) -> Page: ...
    def session(self, sid: str, bastion: str | None = None) -> Session | None: ...
    def session_commands(self, session: Session, after: int = 0) -> list[Command]:
        """Its commands past seq `after`, in seq order."""

    def search(self, q: Search, offset: int, limit: int) -> Page: ...
    def access_page(self, offset: int, limit: int) -> Page:
        """The access log, the newest entry first."""

    def recording(self, session: Session) -> bytes:
        """Its cast's complete lines; CastError if there is none (yet)."""

    def recording_since(self, session: Session, offset: int, max_bytes: int) -> bytes:
        """Its cast's bytes from `offset` on (a line may be half there)."""

    def close(self) -> None:
        """Let go of what it holds (the fleet store's connections)."""


@dataclass
class _Shard:
    signature: tuple[int, int, int]
    sessions: list[Session]
    commands: list[Command]
    folded: list[str]  # the commands casefolded, for substring search
    access: list[AccessEntry]


@dataclass
class _View(Snapshot):
    """The reader's snapshot, with what the search keeps beside it."""

    folded: list[str] = field(default_factory=list)
    _joined: tuple[str, list[int]] | None = None

    def joined(self) -> tuple[str, list[int]]:
        """Every command, a line feed after each, and where each starts."""
        if self._joined is None:
            starts: list[int] = []
            at = 0
            for c in self.commands:
                starts.append(at)
                at += len(c.command) + 1
            self._joined = ("\n".join(c.command for c in self.commands), starts)
        return self._joined


def offset_s(command: Command, session: Session) -> float:
    """Seconds from the session's start to the command: its moment in the cast."""
    try:
        return max(0.0, parse_iso(command.time) - session.started_at)
    except RecordError:
        return 0.0


class LocalReader(local_reader.LocalReader):
    """This bastion's store, read-only; safe to share between request threads.

    Every Reader method (sessions, commands, cast, follower) reads the kept
    snapshot as it is at that call.
    """

    def __init__(self, data_dir: Path) -> None:
        # Not the base's __init__: the data directory may be made after
        # audit-web starts; until then a request shows the error.
        self.data_dir = data_dir
        self.where = str(data_dir)
        self.progress = None
        self.errors: list[str] = []
        self.store_dir = data_dir / "store"
        self._lock = threading.Lock()
        self._shards: dict[Path, _Shard] = {}
        self._key: tuple[tuple[Path, tuple[int, int, int]], ...] = ()
        self._view = _View()

    @property
    def snapshot(self) -> Snapshot:
        return self.view()

    def view(self) -> _View:
        """The store now: shards that changed are read again, the rest kept."""
        with self._lock:
            errors: list[str] = []
            current: list[tuple[Path, tuple[int, int, int]]] = []
            for path in list_shards(self.store_dir):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # moved to quarantine since the listing
                except PermissionError:
                    errors.append(f"cannot read {path}: permission denied")
                    continue
                signature = (st.st_ino, st.st_size, st.st_mtime_ns)
                cached = self._shards.get(path)
                if cached is None or cached.signature != signature:
                    try:
                        self._shards[path] = _read(path, signature)
                    except StoreError as e:
                        errors.append(str(e))
                        self._shards.pop(path, None)
                        continue
                current.append((path, signature))
            key = tuple(current)
            if key != self._key or errors != self._view.errors:
                for gone in set(self._shards) - {p for p, _ in current}:
                    del self._shards[gone]
                self._view = _merge([self._shards[p] for p, _ in current], errors)
                self._key = key
                # Hundreds of thousands of long-lived records: without this,
                # each full collection walks them all, and a request paid
                # 0.5 s for it (bench/console.py). They hold no cycles, so
                # those dropped later are still freed by their refcount.
                gc.freeze()
            self.errors = self._view.errors
            return self._view

    def session_page(self, f: SessionFilter, offset: int, limit: int) -> Page:
        view = self.view()
        chosen = [s for s in view.sessions.values() if f.matches(s)]
        if f.text:
            needle = f.text.casefold()
            ids = {s.id for s in chosen}
            having = {
                c.session
                for c, folded in zip(view.commands, view.folded, strict=True)
                if c.session in ids and needle in folded
            }
            chosen = [s for s in chosen if s.id in having]
        chosen.sort(key=lambda s: (s.started_at, s.id), reverse=True)
        return Page(chosen[offset : offset + limit], len(chosen), offset, limit)

    def session(self, sid: str, bastion: str | None = None) -> Session | None:
        if bastion is not None:
            return None  # this bastion's store: its URLs name no bastion
        return self.view().sessions.get(sid)

    def session_commands(self, session: Session, after: int = 0) -> list[Command]:
        sid = session.id
        found = [c for c in self.view().commands if c.session == sid and c.seq > after]
        found.sort(key=lambda c: c.seq)
        return found

    def recording(self, session: Session) -> bytes:
        return read_cast(self.cast_file(session.id))

    def recording_since(self, session: Session, offset: int, max_bytes: int) -> bytes:
        try:
            with open(self.cast_file(session.id), "rb") as f:
                f.seek(offset)
                return f.read(max_bytes)
        except (OSError, CastError):
            return b""

    def search(self, q: Search, offset: int, limit: int) -> Page:
        view = self.view()
        found, stopped = _found(q, view, time.monotonic() + SEARCH_DEADLINE_S)
        commands = view.commands
        if q.owner is not None:
            mine = {s.id for s in view.sessions.values() if s.bastion_user == q.owner}
            found = [i for i in found if commands[i].session in mine]
        shown = found[::-1][offset : offset + limit]  # the newest first
        hits = [Hit(commands[i], view.sessions.get(commands[i].session)) for i in shown]
        return Page(hits, len(found), offset, limit, stopped)

    def access_page(self, offset: int, limit: int) -> Page:
        entries = self.view().access
        newest_first = entries[::-1]
        return Page(newest_first[offset : offset + limit], len(entries), offset, limit)


def _read(path: Path, signature: tuple[int, int, int]) -> _Shard:
    tables = read_shard(path)
    sessions = list(iter_sessions(tables, path))
    commands: list[Command] = []
    for doc in tables.get(COMMANDS, {}).values():
        try:
            commands.append(Command.from_document(doc))
        except RecordError as e:
            raise StoreError(f"corrupt shard {path}: {e}") from e
    folded = [c.command.casefold() for c in commands]
    return _Shard(signature, sessions, commands, folded, access_entries(tables, path))


def _merge(shards: Iterable[_Shard], errors: list[str]) -> _View:
    view = _View(errors=errors)
    for shard in shards:
        for session in shard.sessions:
            view.sessions[session.id] = session  # the newest document wins
        view.commands.extend(shard.commands)
        view.folded.extend(shard.folded)
        view.access.extend(shard.access)
    return view


def _found(q: Search, view: _View, deadline: float) -> tuple[list[int], bool]:
    """Indices of the commands that match, in store order; and if time ran out."""
    if not q.text:
        raise SearchError("type something to search for")
    if len(q.text) > PATTERN_MAX_CHARS:
        raise SearchError(f"at most {PATTERN_MAX_CHARS} characters, please")
    if not q.regex:
        needle = q.text.casefold()
        return [i for i, folded in enumerate(view.folded) if needle in folded], False
    import regex  # the console's only user of it: matches with a timeout

    try:
        exact = regex.compile(q.text)
        lines = regex.compile(q.text, regex.MULTILINE)
    except regex.error as e:
        raise SearchError(f"not a regular expression: {e}") from e
    try:
        if _CONTEXT_RE.search(q.text):
            return _each(exact, view, deadline), False
        return _joined(exact, lines, view, deadline), False
    except TimeoutError as e:
        return list(e.args[0]) if e.args else [], True


# What may look outside the command it matches in (lookaround, \A, \Z, \G):
# such a pattern is matched against each command alone.
_CONTEXT_RE = re.compile(r"\(\?<?[=!]|\\[AZzG]")


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _each(exact: Any, view: _View, deadline: float) -> list[int]:
    """Each command on its own: the regex module's timeout on every match."""
    found: list[int] = []
    for i, command in enumerate(view.commands):
        try:
            if exact.search(
                command.command, timeout=min(REGEX_STEP_S, _left(deadline))
            ):
                found.append(i)
        except TimeoutError as e:
            raise TimeoutError(found) from e
    return found


def _joined(exact: Any, lines: Any, view: _View, deadline: float) -> list[int]:
    """One scan of every command, a line each, for a pattern that sees only its match.

    With MULTILINE, ^ and $ match at each command's start and end as they do
    in the command alone, and \b sees a line feed there; a match that runs
    past its command's end, or in a multi-line command, is checked against
    that command alone. The scan goes on at the next command after each one.
    """
    text, starts = view.joined()
    found: list[int] = []
    pos = 0
    try:
        while pos < len(text):
            m = lines.search(text, pos, timeout=min(SCAN_STEP_S, _left(deadline)))
            if m is None:
                break
            i = bisect.bisect_right(starts, m.start()) - 1
            command = view.commands[i].command
            end = starts[i] + len(command)
            if (m.end() <= end and "\n" not in command) or exact.search(
                command, timeout=min(REGEX_STEP_S, _left(deadline))
            ):
                found.append(i)
            pos = end + 1
    except TimeoutError as e:
        raise TimeoutError(found) from e
    return found
