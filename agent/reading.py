"""One way to read the record, two stores behind it: this bastion's, or the fleet's.

audit-export, audit-sessions, audit-tail and the console (over the fleet)
read through a Reader: the local store's (agent/local_reader.py, the shards of
one data directory) or the fleet store's (agent/fleet_reader.py,
PostgreSQL; `FleetReader(dsn, fleet_config)`). Both return the same records,
Session and Command; a session read from the fleet carries its `bastion`,
which every output then shows as one more field.

The API, for programs:

- `sessions(selection, limit=None, offset=0, newest_first=False)`: sessions
  in the selection's time window (running at some time in it), by start
  time (or the newest first), a page at a time; `count_sessions(selection)`
  says how many there are;
- `commands(selection, limit=None, offset=0, newest_first=False)`: (command,
  its session) in order (local: as stored; fleet: by time, then bastion,
  session, seq) or the newest first, filtered by session, user, host,
  bastion, time, a case-insensitive substring (`contains`) or a regular
  expression (`regex`; local: Python's, fleet: PostgreSQL's POSIX one), a
  page at a time or all of them; `count_commands(selection, at_most=None)`
  counts them (up to `at_most`, so that a count of a common word is bounded);
- `access(limit=None, offset=0)`: the access log, the newest entry first,
  and `count_access()`;
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
from agent.access_log import AccessEntry
from agent.records import Command, Session, iso

Row = tuple[Command, Session | None]


class ReadError(AgentError):
    """A selection or a store that cannot be read as asked."""


class ReadTimeout(ReadError):
    """A query that ran past its reader's time limit (and was stopped)."""


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
    # The console's session filters (each exact; None means any).
    bastion_user: str | None = None
    remote_user: str | None = None
    host_named: str | None = None  # the host as given, or its inventory name
    origin: str | None = None  # audit-shell, web-token or direct
    recorder: str | None = None  # strace or paramiko
    having: str | None = None  # sessions only: with a command containing this

    def python_regex(self) -> re.Pattern[str] | None:
        """`regex` for Python's re (the local store); ReadError if it is not one.

        The fleet store matches with PostgreSQL's own (POSIX) expressions,
        which say themselves what they refuse, so it is checked only here.
        """
        if self.regex is None:
            return None
        try:
            return re.compile(self.regex)
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
        if self.host and self.host != session.host:
            return False
        return self._console_matches(session)

    def _console_matches(self, s: Session) -> bool:
        if self.bastion_user is not None and self.bastion_user != s.bastion_user:
            return False
        if self.remote_user is not None and self.remote_user != s.remote_user:
            return False
        if self.host_named is not None and self.host_named not in (
            s.host,
            s.inventory_host,
        ):
            return False
        if self.origin is not None and self.origin != (s.origin or "direct"):
            return False
        return self.recorder is None or self.recorder == s.recorder

    def command_matches(self, command: Command, session: Session | None) -> bool:
        if self.session and session is None and command.session != self.session:
            return False
        if self.since and command.time < self.since:
            return False
        if self.until and command.time > self.until:
            return False
        if self.contains and self.contains.lower() not in command.command.lower():
            return False
        pattern = self.python_regex()
        if pattern is not None and pattern.search(command.command) is None:
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
        self,
        selection: Selection,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Session]: ...

    @abc.abstractmethod
    def count_sessions(self, selection: Selection) -> int: ...

    @abc.abstractmethod
    def commands(
        self,
        selection: Selection,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> Iterator[Row]: ...

    @abc.abstractmethod
    def count_commands(self, selection: Selection, at_most: int | None = None) -> int:
        """How many commands `commands(selection)` gives; at most `at_most`."""

    @abc.abstractmethod
    def access(self, limit: int | None = None, offset: int = 0) -> list[AccessEntry]:
        """The access log (agent/access_log.py), the newest entry first."""

    @abc.abstractmethod
    def count_access(self) -> int: ...

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
