"""audit-sessions: the audited sessions, one a row, with the export's filters.

A session is in the time window when it was running at some point in it. On a
terminal a table; into a pipe tab-separated lines under a header line;
`--format json|jsonl|csv` gives the records of schema/session-record.schema.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import IO, Any

from agent.exits import ExitStatus, run_main
from agent.reading import Reader
from agent.records import Session, SessionStatus, iso
from agent.tools.options import (
    add_reading_options,
    add_time_options,
    open_reading,
    printable,
    selection_from_args,
)
from agent.tools.status_view import human_age, human_bytes

PROG = "audit-sessions"
FORMATS = ("table", "json", "jsonl", "csv")
FIELDS = (
    "id",
    "tag",
    "status",
    "bastion_user",
    "remote_user",
    "host",
    "port",
    "ssh_pid",
    "tty",
    "started_at",
    "ended_at",
    "end_reason",
    "command_count",
    "gaps",
    "remote_command",
    "origin",
    "client_addr",
    "inventory_host",
    "remote_account",
    "recorder",
    "recording_bytes",
)
FLEET_FIELDS = (*FIELDS, "bastion")  # read from the fleet store


def session_record(session: Session, reader: Reader) -> dict[str, Any]:
    """A session's public fields and the size of its recording (or null)."""
    doc = session.public_fields()
    doc["recording_bytes"] = reader.recording_bytes(session)
    return {key: doc[key] for key in (FLEET_FIELDS if reader.fleet else FIELDS)}


def row(session: Session, reader: Reader, now: float) -> tuple[str, ...]:
    where = f"{session.remote_user}@{session.host}"
    if session.port not in (None, 22):
        where += f":{session.port}"
    end = session.ended_at if session.ended_at is not None else now
    size = reader.recording_bytes(session)
    name = f"{session.bastion}/{session.id}" if session.bastion else session.id
    return (
        printable(name),
        session.status,
        printable(f"{session.bastion_user} → {where}"),
        iso(session.started_at),
        human_age(end - session.started_at),
        str(session.command_count),
        str(len(session.gaps)),
        human_bytes(size) if size is not None else "-",
        session.recorder or "-",  # strace or paramiko
    )


HEADERS = (
    "session",
    "status",
    "who",
    "started",
    "lasted",
    "commands",
    "gaps",
    "rec",
    "by",
)


def write_table(sessions: list[Session], reader: Reader, out: IO[str]) -> None:
    now = time.time()
    if not out.isatty():
        out.write("\t".join(HEADERS) + "\n")
        for session in sessions:
            out.write("\t".join(row(session, reader, now)) + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(sessions)} sessions", title_justify="left")
    for header in HEADERS:
        table.add_column(header, no_wrap=header != "who")
    for session in sessions:
        cells = row(session, reader, now)
        style = "green" if session.status == SessionStatus.LIVE else ""
        table.add_row(*(Text(c) for c in cells), style=style)
    Console(file=out, highlight=False).print(table)


def write_records(
    sessions: list[Session], reader: Reader, out: IO[str], fmt: str
) -> None:
    records = [session_record(s, reader) for s in sessions]
    if fmt == "json":
        json.dump(records, out, ensure_ascii=False, indent=1)
        out.write("\n")
    elif fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(out)
        writer.writerow(FLEET_FIELDS if reader.fleet else FIELDS)
        for record in records:
            record["gaps"] = json.dumps(record["gaps"])
            writer.writerow("" if v is None else v for v in record.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="List audited sessions.")
    add_reading_options(parser)
    add_time_options(parser, "sessions running")
    parser.add_argument(
        "--status",
        choices=tuple(SessionStatus),
        help="only these",
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        _, reader = open_reading(args)
        with reader:
            selection = selection_from_args(args, status=args.status)
            sessions = reader.sessions(selection)
            if args.format == "table":
                write_table(sessions, reader, sys.stdout)
            else:
                write_records(sessions, reader, sys.stdout, args.format)
            sys.stdout.flush()
        for error in reader.errors:
            print(f"{PROG}: warning: {error}; listed the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if reader.errors else ExitStatus.SUCCESS

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
