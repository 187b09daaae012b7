"""What the command-line tools share: exit codes, the error boundary, filters."""

from __future__ import annotations

import argparse
import enum
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent import AgentError
from agent.config import DEFAULT_DATA_DIR, Config, load_config
from agent.records import Command, Session, iso


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    BAD_INPUT = 2  # usage, configuration, an unusable data directory
    PARTIAL = 3  # done, but a corrupt shard was left out (named on stderr)
    UNHEALTHY = 4  # audit-agent status: the agent is not running or not well
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


def add_data_dir_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the agent's data directory (default: data_dir of the configuration, "
        f"else {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the agent's TOML configuration (default /etc/bastion-audit/agent.toml "
        "if it exists)",
    )


def add_time_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--since",
        metavar="T",
        help=f"{what} at or after T: ISO 8601 (UTC if no zone) or a time ago "
        "(30m, 2h, 7d)",
    )
    parser.add_argument("--until", metavar="T", help=f"{what} at or before T")


def reading_config(args: argparse.Namespace) -> Config:
    """The configuration a reading tool works with; --data-dir wins."""
    config = load_config(getattr(args, "config", None))
    if args.data_dir is None:
        args.data_dir = config.data_dir
    return config
