"""audit-export: commands with their sessions' fields, as JSON, JSON Lines or CSV.

Also a session's recording (`--cast TAG`), as the asciicast v2 file it is.
The fields are documented in the README and in schema/export-record.schema.json.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from agent.casts import CastError, cast_path, read_cast
from agent.config import reading_config
from agent.escape import csv_cell
from agent.exits import ExitStatus, run_main
from agent.export_record import (
    COMMAND_FIELDS,
    FIELDS,
    JsonRecords,
    session_fields,
)
from agent.reader import Snapshot, load
from agent.records import Command, Session
from agent.tools.options import Filter, add_reading_options, add_time_options

PROG = "audit-export"
FORMATS = ("json", "jsonl", "csv")
PROGRESS_EVERY = 20_000  # commands between two progress updates


def select(
    snapshot: Snapshot,
    selection: Filter,
    scanned: Callable[[int], None] | None = None,
) -> Iterator[tuple[Command, Session | None]]:
    """The selected commands with their sessions, in the order stored.

    `scanned(n)` hears how many commands were looked at, now and then.
    """
    if scanned is None:
        for command in snapshot.commands:
            session = snapshot.sessions.get(command.session)
            if selection.command_matches(command, session):
                yield command, session
        return
    for n, command in enumerate(snapshot.commands, 1):
        if n % PROGRESS_EVERY == 0:
            scanned(n)
        session = snapshot.sessions.get(command.session)
        if selection.command_matches(command, session):
            yield command, session
    scanned(len(snapshot.commands))


def write_csv(rows: Iterator[tuple[Command, Session | None]], out: IO[str]) -> int:
    """RFC 4180 CSV with a header row of FIELDS; a missing value is empty.

    Text cells go through escape.csv_cell: they are what users typed.
    """
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    tails: dict[str | None, tuple[Any, ...]] = {
        None: ("",) * (len(FIELDS) - COMMAND_FIELDS)
    }
    count = 0

    def lines() -> Iterator[tuple[Any, ...]]:
        nonlocal count
        for command, session in rows:
            sid = session.id if session is not None else None
            tail = tails.get(sid)
            if tail is None:
                assert session is not None
                fields = session_fields(session)  # by name: FIELDS sets the order
                values = (fields.get(name) for name in FIELDS[COMMAND_FIELDS:])
                tail = tails[sid] = tuple(_cell(v) for v in values)
            count += 1
            yield (
                command.session,
                command.seq,
                command.time,
                csv_cell(command.command),
                "true" if command.cancelled else "false",
            ) + tail

    writer.writerows(lines())  # the loop over rows stays in C
    return count


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return csv_cell(value) if isinstance(value, str) else value


def write_records(
    rows: Iterator[tuple[Command, Session | None]], out: IO[str], fmt: str
) -> int:
    if fmt == "csv":
        return write_csv(rows, out)
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
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export audited commands, or one session's recording.",
    )
    add_reading_options(parser)
    add_time_options(parser, "commands")
    parser.add_argument("--format", choices=FORMATS, default="json")
    parser.add_argument(
        "--cast",
        metavar="TAG",
        help="write the session's recording (asciicast v2) instead of commands",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (atomically) instead of stdout",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is one on stderr when it is a terminal)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        reading_config(args)
        if args.cast:
            data = read_cast(find_cast(args.data_dir, args.cast))
            _output(args.output, lambda out: out.buffer.write(data))
            return ExitStatus.SUCCESS
        selection = Filter.from_args(args)
        with progress_bar(sys.stderr.isatty() and not args.no_progress) as bar:
            snapshot = load(args.data_dir, bar.shards if bar else None)
            if bar:
                bar.start_commands(len(snapshot.commands))
            records = select(snapshot, selection, bar.commands if bar else None)
            _output(args.output, lambda out: write_records(records, out, args.format))
        for error in snapshot.errors:
            print(f"{PROG}: warning: {error}; exported the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if snapshot.errors else ExitStatus.SUCCESS

    return run_main(PROG, body)


def find_cast(data_dir: Path, name: str) -> Path:
    """The recording of session `name` (an id, or a tag used only once)."""
    path = cast_path(data_dir, name)
    if "/" not in name and path.exists():
        return path
    snapshot = load(data_dir)
    ids = sorted(s.id for s in snapshot.sessions.values() if name in (s.id, s.tag))
    if len(ids) > 1:
        raise CastError(
            f"tag {name!r} names {len(ids)} sessions ({', '.join(ids)}): pick one"
        )
    if not ids:
        raise CastError(f"no session {name!r} in {data_dir}")
    path = cast_path(data_dir, ids[0])
    if not path.exists():
        raise CastError(f"session {ids[0]} has no recording (at {path})")
    return path


class _Bar:
    """rich's progress bar on stderr: shards read, then commands written."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.reading = progress.add_task("reading the store", total=None)
        self.writing: Any = None

    def shards(self, done: int, total: int) -> None:
        self.progress.update(self.reading, completed=done, total=total)

    def start_commands(self, total: int) -> None:
        self.writing = self.progress.add_task("exporting commands", total=total)

    def commands(self, done: int) -> None:
        self.progress.update(self.writing, completed=done)


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[_Bar | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    console = Console(file=sys.stderr)
    # Not redirect_stdout: the records go to stdout, past rich.
    with Progress(
        *columns,
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        yield _Bar(progress)


def _output(output: str | None, write: Callable[[Any], object]) -> None:
    """To stdout, or to a temporary file beside FILE renamed over it."""
    if not output or output == "-":
        write(sys.stdout)
        sys.stdout.flush()
        return
    path = Path(output)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    sys.exit(main())
