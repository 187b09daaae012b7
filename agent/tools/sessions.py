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
from agent.tools.layout import (
    CLOCK_WIDTH,
    FULL_TIME_WIDTH,
    Column,
    day_of,
    fit,
    full_times,
    runs_by_day,
    time_cell,
)
from agent.tools.options import (
    add_reading_options,
    add_time_options,
    check_matches,
    open_reading,
    printable,
    selection_from_args,
)
from agent.tools.status_view import human_age, human_bytes
from agent.version import add_version_option

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
    "unparsed_input",
    "recording_bytes",
    "bastion",
)


def session_record(session: Session, reader: Reader, bastion: str) -> dict[str, Any]:
    """A session's public fields, the size of its recording (or null), its bastion.

    `bastion`: this one's name; a session read from the fleet names its own.
    """
    doc = session.public_fields()
    doc["recording_bytes"] = reader.recording_bytes(session)
    doc["bastion"] = session.bastion or bastion
    return {key: doc[key] for key in FIELDS}


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


# On a terminal: shorter headers, and the columns' order of shrinking
# (agent/tools/layout.py): "who" is the free text, last to shrink; the id wraps
# (whole) only past SESSION_MAX_UNWRAPPED; the rest keep their widths.
SHORT_HEADERS = ("session", "status", "who", "started", "lasted", "cmds", "gaps")
SESSION_MAX_UNWRAPPED = 24
WHO_MIN = 12


def write_table(sessions: list[Session], reader: Reader, out: IO[str]) -> None:
    now = time.time()
    if not out.isatty():
        out.write("\t".join(HEADERS) + "\n")
        for session in sessions:
            out.write("\t".join(row(session, reader, now)) + "\n")
        return
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False)
    width = console.width
    rows = [row(session, reader, now) for session in sessions]
    headers = SHORT_HEADERS + HEADERS[len(SHORT_HEADERS) :]
    natural = [
        max([len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)
    ]
    time_width = FULL_TIME_WIDTH if full_times(width) else CLOCK_WIDTH
    natural[3] = max(len(headers[3]), time_width)
    columns = [Column(n, n, 0) for n in natural]
    columns[0] = Column(natural[0], min(natural[0], SESSION_MAX_UNWRAPPED), 1)
    columns[2] = Column(natural[2], WHO_MIN, 2)
    widths = fit(columns, width, fill=False)
    console.print(Text(f"{len(sessions)} sessions", style="bold"))
    if not rows:
        return
    for n, (start, end) in enumerate(runs_by_day([r[3] for r in rows])):
        if not full_times(width):
            console.print(Text(f"── {day_of(rows[start][3])} (UTC)", style="dim"))
        table = Table(
            box=None,
            show_header=n == 0,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            collapse_padding=True,
        )
        for header, w in zip(headers, widths, strict=True):
            table.add_column(header, width=w, overflow="fold")
        for session, cells in zip(sessions[start:end], rows[start:end], strict=True):
            style = "green" if session.status == SessionStatus.LIVE else ""
            shown = list(cells)
            shown[3] = time_cell(cells[3], width)
            table.add_row(*(Text(c) for c in shown), style=style)
        console.print(table)


def write_records(
    sessions: list[Session], reader: Reader, out: IO[str], fmt: str, bastion: str
) -> None:
    records = [session_record(s, reader, bastion) for s in sessions]
    if fmt == "json":
        json.dump(records, out, ensure_ascii=False, indent=1)
        out.write("\n")
    elif fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        for record in records:
            record["gaps"] = json.dumps(record["gaps"])
            if record["unparsed_input"] is not None:
                record["unparsed_input"] = json.dumps(record["unparsed_input"])
            writer.writerow("" if v is None else v for v in record.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="List audited sessions.")
    add_version_option(parser)
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
        config, reader = open_reading(args)
        with reader:
            selection = selection_from_args(args, status=args.status)
            check_matches(PROG, selection, reader)
            sessions = reader.sessions(selection)
            if args.format == "table":
                write_table(sessions, reader, sys.stdout)
            else:
                bastion = config.bastion_name
                write_records(sessions, reader, sys.stdout, args.format, bastion)
            sys.stdout.flush()
        for error in reader.errors:
            print(f"{PROG}: warning: {error}; listed the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if reader.errors else ExitStatus.SUCCESS

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
