"""What the command-line tools share: exit codes, the error boundary, filters."""

from __future__ import annotations

import argparse
import enum
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent import AgentError
from agent.config import DEFAULT_DATA_DIR
from agent.records import Command, Session, iso


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    BAD_INPUT = 2  # usage, configuration, an unusable data directory
    PARTIAL = 3  # done, but a corrupt shard was left out (named on stderr)
    CTRL_C = 130


def run_cli(
    prog: str, body: Callable[[], int], ctrl_c_status: int = ExitStatus.CTRL_C
) -> int:
    """The one place where errors become a message and an exit code."""
    try:
        return body()
    except KeyboardInterrupt:
        return ctrl_c_status
    except BrokenPipeError:
        # The reader went away (`| head`): not an error; keep Python quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitStatus.SUCCESS
    except AgentError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return ExitStatus.BAD_INPUT
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return ExitStatus.ERROR


def setup_logging(prog: str, verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{prog}: %(levelname)s: %(message)s",
    )


class FilterError(AgentError):
    """A filter value that cannot be understood."""


def parse_time(text: str) -> str:
    """An ISO 8601 time (naive means UTC) as the store's own time text."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise FilterError(f"not an ISO 8601 time: {text!r}") from e
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
        if self.session and session is None and command.session != self.session:
            return False
        if self.since and command.time < self.since:
            return False
        if self.until and command.time > self.until:
            return False
        return self.session_matches(session)


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the agent's data directory (default {DEFAULT_DATA_DIR})",
    )
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
