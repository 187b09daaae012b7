"""What the operators' tools share: the data-dir options, filters, escaping."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from agent import AgentError
from agent.config import add_data_dir_options
from agent.records import Command, Session, iso


class FilterError(AgentError):
    """A filter value that cannot be understood."""


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float | None = None) -> str:
    """An ISO 8601 time (naive means UTC), or a time ago (`90s`, `2h`, `7d`).

    Returned as the store's own time text, so that it compares as text.
    """
    ago = _DURATION_RE.fullmatch(text.strip())
    if ago is not None:
        seconds = float(ago.group(1)) * _UNIT_S[ago.group(2)]
        return iso((time.time() if now is None else now) - seconds)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise FilterError(
            f"not an ISO 8601 time nor a time ago like 2h or 7d: {text!r}"
        ) from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return iso(dt.timestamp())


@dataclass(frozen=True)
class Filter:
    """The selection every reading tool offers."""

    session: str | None = None
    user: str | None = None
    host: str | None = None
    since: str | None = None  # iso() text, compared as text
    until: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Filter:
        return cls(
            session=args.session,
            user=args.user,
            host=args.host,
            since=parse_time(args.since) if getattr(args, "since", None) else None,
            until=parse_time(args.until) if getattr(args, "until", None) else None,
        )

    def session_matches(self, session: Session | None) -> bool:
        if session is None:
            return not (self.user or self.host)
        if self.session and self.session not in (session.id, session.tag):
            return False
        if self.user and self.user not in (session.bastion_user, session.remote_user):
            return False
        return not self.host or self.host == session.host

    def command_matches(self, command: Command, session: Session | None) -> bool:
        return self.time_matches(command.time) and self.session_id_matches(
            command.session, session
        )

    def session_id_matches(self, session_id: str, session: Session | None) -> bool:
        """The part of command_matches that depends on the session alone."""
        if self.session and session is None and session_id != self.session:
            return False
        return self.session_matches(session)

    def time_matches(self, time: str) -> bool:
        """`time`: iso() text, as the store keeps it."""
        if self.since and time < self.since:
            return False
        return not (self.until and time > self.until)


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir_options(parser)
    parser.add_argument(
        "--session", metavar="TAG", help="only this session (id or tag)"
    )
    parser.add_argument(
        "--user", metavar="U", help="only sessions of this bastion or remote user"
    )
    parser.add_argument("--host", metavar="H", help="only sessions to this host")


def printable(text: str) -> str:
    """Escape control characters so a stored command cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def add_time_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--since",
        metavar="T",
        help=f"{what} at or after T: ISO 8601 (UTC if no zone) or a time ago "
        "(30m, 2h, 7d)",
    )
    parser.add_argument("--until", metavar="T", help=f"{what} at or before T")
