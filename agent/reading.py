"""One way to read the record, two stores behind it: this bastion's, or the fleet's.

audit-export, audit-sessions, audit-tail (and the console, later) read
through a Reader: the local store's (agent/local_reader.py, the shards of
one data directory) or the fleet store's (agent/fleet_reader.py,
PostgreSQL; `FleetReader(dsn, fleet_config)`). Both return the same records,
Session and Command; a session read from the fleet carries its `bastion`,
which every output then shows as one more field.

The API, for programs:

- `sessions(selection, limit=None, offset=0)`: sessions in the selection's
  time window (running at some time in it), by start time, a page at a time;
- `commands(selection, limit=None, offset=0)`: (command, its session) in
  order (local: as stored; fleet: by time, then bastion, session, seq),
  filtered by session, user, host, bastion, time, a case-insensitive
  substring (`contains`) or a regular expression (`regex`; local: Python's,
  fleet: PostgreSQL's POSIX one), a page at a time or all of them;
- `cast(name, bastion=None)`: a session's recording, the asciicast v2 bytes;
- `recording_bytes(session)`: its size, or None;
- `follower()`: new commands as they are stored (`poll()`), for audit-tail;
- `errors`: what could not be read (a corrupt shard), the rest still given.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from dataclasses import dataclass

from agent import AgentError
from agent.records import Command, Session, iso

Row = tuple[Command, Session | None]


class ReadError(AgentError):
    """A selection or a store that cannot be read as asked."""


@dataclass(frozen=True)
class Selection:
    """The filters every reader offers; None means any."""

    session: str | None = None  # a session id or tag
    user: str | None = None  # the bastion or the remote user
    host: str | None = None
    since: str | None = None  # iso() text, compared as text
    until: str | None = None
    bastion: str | None = None  # the fleet's bastion id
    status: str | None = None  # sessions only: live, closed ...
    contains: str | None = None  # commands only: a substring, any case
    regex: str | None = None  # commands only: a regular expression

    def __post_init__(self) -> None:
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise ReadError(f"not a regular expression: {self.regex!r}: {e}") from e

    def session_matches(self, session: Session | None) -> bool:
        if session is None:
            return not (self.user or self.host or self.bastion)
        if self.session and self.session not in (session.id, session.tag):
            return False
        if self.bastion and self.bastion != session.bastion:
            return False
        if self.user and self.user not in (session.bastion_user, session.remote_user):
            return False
        return not self.host or self.host == session.host

    def command_matches(self, command: Command, session: Session | None) -> bool:
        if self.session and session is None and command.session != self.session:
            return False
        if self.since and command.time < self.since:
            return False
        if self.until and command.time > self.until:
            return False
        if self.contains and self.contains.lower() not in command.command.lower():
            return False
        if self.regex and re.search(self.regex, command.command) is None:
            return False
        return self.session_matches(session)

    def in_window(self, session: Session, now: float) -> bool:
        """Running at some time between since and until (text compare, as iso)."""
        started = iso(session.started_at)
        ended = iso(session.ended_at if session.ended_at is not None else now)
        if self.until and started > self.until:
            return False
        return not (self.since and ended < self.since)


class Follower(abc.ABC):
    """New commands as they are stored, for a live feed."""

    errors: list[str]

    @abc.abstractmethod
    def poll(self) -> list[Row]:
        """What was stored since the last poll, in order (the first: what is there)."""

    def close(self) -> None:  # noqa: B027 (most hold nothing)
        """Let go of what it holds (a connection)."""


class Reader(abc.ABC):
    """The record, read-only; a context manager that closes what it opened."""

    errors: list[str]
    where: str  # the store, for messages: a data directory or user@host/db
    fleet: bool  # whether records carry their bastion

    @abc.abstractmethod
    def sessions(
        self, selection: Selection, limit: int | None = None, offset: int = 0
    ) -> list[Session]: ...

    @abc.abstractmethod
    def commands(
        self, selection: Selection, limit: int | None = None, offset: int = 0
    ) -> Iterator[Row]: ...

    @abc.abstractmethod
    def cast(self, name: str, bastion: str | None = None) -> bytes: ...

    @abc.abstractmethod
    def recording_bytes(self, session: Session) -> int | None: ...

    @abc.abstractmethod
    def follower(self, selection: Selection, last: int = 10) -> Follower:
        """`last`: how many of the stored commands the first poll gives at most."""

    def close(self) -> None:  # noqa: B027 (a local reader holds nothing)
        """Let go of what it holds (a connection)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
