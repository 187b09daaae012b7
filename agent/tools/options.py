"""What the operators' tools share: the data-dir options, filters, escaping."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from agent import AgentError
from agent.config import add_data_dir_options
from agent.escape import printable as printable  # the tools' terminal escaping
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
        # By id only: anyone may start an ssh with someone else's tag, which
        # then is the session TAG~N, not a part of TAG.
        if self.session and self.session != session.id:
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
        return self.session_matches(session)


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir_options(parser)
    parser.add_argument(
        "--session",
        metavar="ID",
        help="only this session: its id (the tag, or TAG~N for a tag used again)",
    )
    parser.add_argument(
        "--user", metavar="U", help="only sessions of this bastion or remote user"
    )
    parser.add_argument("--host", metavar="H", help="only sessions to this host")


def add_time_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--since",
        metavar="T",
        help=f"{what} at or after T: ISO 8601 (UTC if no zone) or a time ago "
        "(30m, 2h, 7d)",
    )
    parser.add_argument("--until", metavar="T", help=f"{what} at or before T")
