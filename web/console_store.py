"""What the console reads: sessions, commands, the access log, recordings.

`ConsoleReader` is the console's view of a store; `LocalReader` reads this
bastion's shards (agent/shards.py) read-only, through the group the agent
shares them with (`read_group`). A shard is parsed again only when it
changed (inode, size, mtime): the agent rewrites only the newest one, so a
request costs one small shard's parse plus the filtering, however large the
store is. The fleet store's reader (issue "Many bastions, one record") is to
take `LocalReader`'s place behind the same methods.

Searching is bounded: a regular expression runs under the `regex` module's
timeout, and the whole scan under SEARCH_DEADLINE_S; a search stopped by the
deadline says so and returns what it found.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.access_log import AccessEntry
from agent.casts import cast_path
from agent.reader import access_entries
from agent.records import Command, RecordError, Session, parse_iso
from agent.shards import COMMANDS, StoreError, iter_sessions, list_shards, read_shard
from web import WebError

SEARCH_DEADLINE_S = 2.0  # a whole search, regex or not
REGEX_STEP_S = 0.05  # one command's match, at most
PATTERN_MAX_CHARS = 500


class SearchError(WebError):
    """A search that cannot run (a pattern that does not compile)."""


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

    @property
    def next_offset(self) -> int | None:
        end = self.offset + self.limit
        return end if end < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset else None


class ConsoleReader(Protocol):
    def sessions(self, f: SessionFilter, offset: int, limit: int) -> Page: ...
    def session(self, sid: str) -> Session | None: ...
    def commands(self, sid: str) -> list[Command]: ...
    def search(self, q: Search, offset: int, limit: int) -> Page: ...
    def access(self, offset: int, limit: int) -> Page: ...
    def cast_file(self, sid: str) -> Path: ...
    def errors(self) -> list[str]: ...


@dataclass
class _Shard:
    signature: tuple[int, int, int]
    sessions: list[Session]
    commands: list[Command]
    folded: list[str]  # the commands casefolded, for substring search
    access: list[AccessEntry]


@dataclass
class _View:
    sessions: dict[str, Session] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    access: list[AccessEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def offset_s(command: Command, session: Session) -> float:
    """Seconds from the session's start to the command: its moment in the cast."""
    try:
        return max(0.0, parse_iso(command.time) - session.started_at)
    except RecordError:
        return 0.0


class LocalReader:
    """This bastion's store, read-only; safe to share between request threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store_dir = data_dir / "store"
        self._lock = threading.Lock()
        self._shards: dict[Path, _Shard] = {}
        self._key: tuple[tuple[Path, tuple[int, int, int]], ...] = ()
        self._view = _View()

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
            return self._view

    def errors(self) -> list[str]:
        return list(self.view().errors)

    def sessions(self, f: SessionFilter, offset: int, limit: int) -> Page:
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

    def session(self, sid: str) -> Session | None:
        return self.view().sessions.get(sid)

    def commands(self, sid: str) -> list[Command]:
        found = [c for c in self.view().commands if c.session == sid]
        found.sort(key=lambda c: c.seq)
        return found

    def search(self, q: Search, offset: int, limit: int) -> Page:
        view = self.view()
        deadline = time.monotonic() + SEARCH_DEADLINE_S
        matches = _matcher(q)
        hits: list[Hit] = []
        total = 0
        stopped = False
        commands = view.commands
        for i in range(len(commands) - 1, -1, -1):  # the newest first
            command = commands[i]
            session = view.sessions.get(command.session)
            if q.owner is not None and (
                session is None or session.bastion_user != q.owner
            ):
                continue
            if total % 256 == 0 and time.monotonic() > deadline:
                stopped = True
                break
            try:
                if not matches(command.command, view.folded[i], deadline):
                    continue
            except TimeoutError:
                stopped = True
                break
            if offset <= total < offset + limit:
                hits.append(Hit(command, session))
            total += 1
        return Page(hits, total, offset, limit, stopped)

    def access(self, offset: int, limit: int) -> Page:
        entries = self.view().access
        newest_first = entries[::-1]
        return Page(newest_first[offset : offset + limit], len(entries), offset, limit)

    def cast_file(self, sid: str) -> Path:
        return cast_path(self.data_dir, sid)


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


def _matcher(q: Search) -> Any:
    """matches(text, folded, deadline) for the search; SearchError if it is bad."""
    if not q.text:
        raise SearchError("type something to search for")
    if len(q.text) > PATTERN_MAX_CHARS:
        raise SearchError(f"at most {PATTERN_MAX_CHARS} characters, please")
    if not q.regex:
        needle = q.text.casefold()
        return lambda text, folded, deadline: needle in folded
    import regex  # the console's only user of it: a timeout per match

    try:
        pattern = regex.compile(q.text)
    except regex.error as e:
        raise SearchError(f"not a regular expression: {e}") from e

    def matches(text: str, folded: str, deadline: float) -> bool:
        left = min(REGEX_STEP_S, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError
        return pattern.search(text, timeout=left) is not None

    return matches
