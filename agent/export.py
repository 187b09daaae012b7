"""audit-export: commands with their sessions' fields, as JSON or JSON Lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from agent.cli import ExitStatus, Filter, add_reading_options, run_cli
from agent.reader import Snapshot, load
from agent.records import Command, Session

PROG = "audit-export"


def session_fields(session: Session) -> dict[str, Any]:
    """The fields every exported command carries from its session."""
    public = session.public_fields()
    return {
        "tag": session.tag,
        "bastion_user": session.bastion_user,
        "remote_user": session.remote_user,
        "host": session.host,
        "port": session.port,
        "ssh_pid": session.ssh_pid,
        "tty": session.tty,
        "session_started_at": public["started_at"],
        "session_ended_at": public["ended_at"],
        "session_status": session.status,
        # Set when audit-shell opened the session (agent/intents.py), else null.
        "origin": session.origin,
        "client_addr": session.client_addr,
        "inventory_host": session.inventory_host,
        "remote_account": session.remote_account,
    }


def session_records(snapshot: Snapshot, selection: Filter) -> Iterator[dict[str, Any]]:
    """`--sessions`: one record per session, connections never started included."""
    for session in snapshot.sessions.values():
        started = session.public_fields()["started_at"]
        if selection.since and started < selection.since:
            continue
        if selection.until and started > selection.until:
            continue
        if selection.session_matches(session):
            yield session.public_fields()


def write_session_records(
    records: Iterator[dict[str, Any]], out: IO[str], fmt: str
) -> None:
    texts = (_ENCODER.encode(r) for r in records)
    if fmt == "jsonl":
        out.writelines(t + "\n" for t in texts)
        return
    body = ",\n  ".join(texts)
    out.write(f"[\n  {body}\n]\n" if body else "[]\n")


def select(
    snapshot: Snapshot, selection: Filter
) -> Iterator[tuple[Command, Session | None]]:
    """The selected commands with their sessions, in the order stored."""
    for command in snapshot.commands:
        session = snapshot.sessions.get(command.session)
        if selection.command_matches(command, session):
            yield command, session


def flat_record(command: Command, session: Session | None) -> dict[str, Any]:
    """One exported command with its session's fields (README: export fields)."""
    record: dict[str, Any] = {
        "session": command.session,
        "seq": command.seq,
        "time": command.time,
        "command": command.command,
        "cancelled": command.cancelled,
    }
    if session is not None:
        record.update(session_fields(session))
    return record


class JsonRecords:
    """flat_record() as JSON text, fast enough for a million records.

    The session's fields are encoded once per session and the command's four
    by hand; the text is exactly what json.dumps(flat_record(...),
    ensure_ascii=False) gives, at a third of the cost.
    """

    def __init__(self) -> None:
        self._tails: dict[str, str] = {}

    def text(self, command: Command, session: Session | None) -> str:
        tail = "}"
        if session is not None:
            tail = self._tails.get(session.id) or self._tail(session)
        return (
            f'{{"session": {_string(command.session)}, "seq": {command.seq}, '
            f'"time": {_string(command.time)}, "command": {_string(command.command)}, '
            f'"cancelled": {"true" if command.cancelled else "false"}{tail}'
        )

    def _tail(self, session: Session) -> str:
        tail = self._tails[session.id] = (
            ", " + _ENCODER.encode(session_fields(session))[1:]
        )
        return tail


_ENCODER = json.JSONEncoder(ensure_ascii=False)
_string = json.encoder.encode_basestring


def write_records(
    rows: Iterator[tuple[Command, Session | None]], out: IO[str], fmt: str
) -> int:
    text = JsonRecords().text
    count = 0
    if fmt == "jsonl":
        for command, session in rows:
            out.write(text(command, session) + "\n")
            count += 1
        return count
    out.write("[")
    for command, session in rows:
        out.write((",\n  " if count else "\n  ") + text(command, session))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Export audited commands.")
    add_reading_options(parser)
    parser.add_argument(
        "--since", metavar="T", help="commands at or after T (ISO 8601; UTC if no zone)"
    )
    parser.add_argument("--until", metavar="T", help="commands at or before T")
    parser.add_argument("--format", choices=("json", "jsonl"), default="json")
    parser.add_argument(
        "--sessions",
        action="store_true",
        help="one record per session instead of per command (includes "
        "audit-shell connections whose ssh never started)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (atomically) instead of stdout",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        selection = Filter.from_args(args)
        snapshot = load(args.data_dir)
        records = select(snapshot, selection)

        def write(out: IO[str]) -> None:
            if args.sessions:
                rows = session_records(snapshot, selection)
                write_session_records(rows, out, args.format)
            else:
                write_records(records, out, args.format)

        if args.output and args.output != "-":
            _write_file(Path(args.output), write)
        else:
            write(sys.stdout)
            sys.stdout.flush()
        for error in snapshot.errors:
            print(f"{PROG}: warning: {error}; exported the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if snapshot.errors else ExitStatus.SUCCESS

    return run_cli(PROG, body)


def _write_file(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Write to a temporary file beside `path`, then rename: never half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    sys.exit(main())
