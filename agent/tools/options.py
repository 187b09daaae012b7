"""What the operators' tools share: options, filters, the reader, escaping."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from agent import AgentError
from agent.config import Config, add_data_dir_options, reading_config
from agent.escape import printable as printable  # the tools' terminal escaping
from agent.exits import ExitStatus
from agent.reading import Reader, Selection
from agent.records import iso

# The filters every reading tool offers (agent/reading.py).
Filter = Selection


class FilterError(AgentError):
    """A filter value that cannot be understood, or bounds that contradict."""


class NoMatch(AgentError):
    """--session, --user, --host or --bastion name no session of the store."""

    exit_status = ExitStatus.ERROR


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


def selection_from_args(args: argparse.Namespace, **more: str | None) -> Selection:
    since = parse_time(args.since) if getattr(args, "since", None) else None
    until = parse_time(args.until) if getattr(args, "until", None) else None
    if since and until and since > until:
        raise FilterError(
            f"--since {args.since} ({since}) is after --until {args.until} "
            f"({until}): nothing can be in between"
        )
    return Selection(
        session=args.session,
        user=args.user,
        host=args.host,
        since=since,
        until=until,
        bastion=getattr(args, "bastion", None),
        **more,
    )


def check_matches(prog: str, selection: Selection, reader: Reader) -> None:
    """NoMatch, naming the filters, when they select no session of the store.

    Any time, any status: a filter that names nothing is a typo more often
    than an empty answer. A command whose session document is missing still
    answers --session. Unreadable shards are named first: it may be in one.
    """
    named = Selection(
        session=selection.session,
        user=selection.user,
        host=selection.host,
        bastion=selection.bastion,
    )
    if not (named.session or named.user or named.host or named.bastion):
        return
    if reader.sessions(named, limit=1):
        return
    only_session = not (named.user or named.host or named.bastion)
    if only_session and any(True for _ in reader.commands(named, limit=1)):
        return
    for error in reader.errors:
        print(f"{prog}: warning: {error}", file=sys.stderr)
    text = "no session"
    if named.session:
        text += f" {named.session!r}"
    if named.user:
        text += f" of user {named.user!r}"
    if named.host:
        text += f" to host {named.host!r}"
    if named.bastion:
        text += f" on bastion {named.bastion!r}"
    raise NoMatch(text)


def open_reading(
    args: argparse.Namespace, progress: Callable[[int, int], None] | None = None
) -> tuple[Config, Reader]:
    """The configuration, and the store to read: the fleet's or the data dir's.

    The fleet store with --database, or with a [fleet] table in the
    configuration unless --local or --data-dir asks for this bastion's own.
    """
    local = args.local or args.data_dir is not None
    config = reading_config(args)
    database = args.database or (None if local else config.fleet.database)
    if database:
        from agent.fleet_reader import FleetReader

        return config, FleetReader(database, config.fleet)
    from agent.local_reader import LocalReader

    return config, LocalReader(args.data_dir, progress)


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
    add_store_options(parser)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Which store open_reading() opens: the fleet's, or this bastion's."""
    parser.add_argument(
        "--database",
        metavar="DSN",
        help="read the fleet store (a PostgreSQL connection string; the password "
        "from [fleet] password_file or PGPASSWORD) instead of the data directory",
    )
    parser.add_argument(
        "--bastion", metavar="ID", help="only sessions of this bastion (fleet store)"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="read this bastion's data directory even with a [fleet] table",
    )


def add_time_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--since",
        metavar="T",
        help=f"{what} at or after T: ISO 8601 (UTC if no zone) or a time ago "
        "(30m, 2h, 7d)",
    )
    parser.add_argument("--until", metavar="T", help=f"{what} at or before T")
