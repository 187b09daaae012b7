"""audit-export: commands with their sessions' fields, as JSON or JSON Lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agent.cli import ExitStatus, Filter, add_reading_options, run_cli
from agent.reader import Snapshot, load
from agent.records import Session

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
    }


def select(snapshot: Snapshot, selection: Filter) -> Iterator[dict[str, Any]]:
    """Flat command records (README: export fields), in the order stored."""
    fields: dict[str, dict[str, Any]] = {}
    for command in snapshot.commands:
        session = snapshot.sessions.get(command.session)
        if not selection.command_matches(command, session):
            continue
        record: dict[str, Any] = {
            "session": command.session,
            "seq": command.seq,
            "time": command.time,
            "command": command.command,
        }
        if session is not None:
            if session.id not in fields:
                fields[session.id] = session_fields(session)
            record.update(fields[session.id])
        yield record


def write_records(records: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count
    out.write("[")
    for record in records:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(record, ensure_ascii=False))
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
        if args.output and args.output != "-":
            _write_file(Path(args.output), records, args.format)
        else:
            write_records(records, sys.stdout, args.format)
            sys.stdout.flush()
        for error in snapshot.errors:
            print(f"{PROG}: warning: {error}; exported the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if snapshot.errors else ExitStatus.SUCCESS

    return run_cli(PROG, body)


def _write_file(path: Path, records: Iterator[dict[str, Any]], fmt: str) -> None:
    """Write to a temporary file beside `path`, then rename: never half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            write_records(records, out, fmt)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    sys.exit(main())
