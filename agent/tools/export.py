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

from agent.escape import FORMULA_START, csv_cell, json_dumps
from agent.exits import ExitStatus, run_main
from agent.export_record import (
    COMMAND_FIELDS,
    FIELDS,
    OWN_FIELDS,
    JsonRecords,
    Stamp,
    session_fields,
)
from agent.local_reader import LocalReader
from agent.reader import Snapshot
from agent.reading import Row
from agent.records import Command, Session
from agent.tools.options import (
    Filter,
    add_reading_options,
    add_time_options,
    check_matches,
    open_reading,
    selection_from_args,
)
from agent.version import add_version_option

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


def write_csv(
    rows: Iterator[tuple[Command, Session | None]], out: IO[str], stamp: Stamp
) -> int:
    """RFC 4180 CSV with a header row of FIELDS; a missing value is empty.

    `risk` is the rules' names separated by spaces (a name has none). Text
    cells go through escape.csv_cell: they are what users typed.
    """
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    session_names = FIELDS[COMMAND_FIELDS:-OWN_FIELDS]
    tails: dict[tuple[str | None, str] | None, tuple[Any, ...]] = {
        None: ("",) * len(session_names) + (stamp.bastion,)
    }
    risk = stamp.risk
    count = 0

    def lines() -> Iterator[tuple[Any, ...]]:
        nonlocal count
        for command, session in rows:
            sid = (session.bastion, session.id) if session is not None else None
            tail = tails.get(sid)
            if tail is None:
                assert session is not None
                named = session_fields(session)  # by name: FIELDS sets the order
                values = (named.get(name) for name in session_names)
                tail = tails[sid] = tuple(_cell(v) for v in values) + (
                    _cell(stamp.bastion_of(session)),
                )
            count += 1
            text = command.command
            if not text.isprintable() or text[:1] in FORMULA_START:
                text = csv_cell(text)  # what a user typed: controls, formulas
            yield (
                (
                    command.session,
                    command.seq,
                    command.time,
                    text,
                    "true" if command.cancelled else "false",
                    command.kind.value,
                    "" if command.transfer is None else _compact(command.transfer),
                    "" if command.action is None else _compact(command.action),
                    _cell(command.program),
                    _cell(command.typed),  # what the user typed, too
                    _cell(command.keys),
                    "true" if command.unterminated else "false",
                )
                + tail
                + (" ".join(risk(command.command)),)
            )

    writer.writerows(lines())  # the loop over rows stays in C
    return count


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return csv_cell(value) if isinstance(value, str) else value


def _compact(fields: Any) -> str:
    """A transfer's fields (file names: the user's too) as one JSON cell."""
    return json_dumps(dict(fields), separators=(",", ":"))


def write_records(
    rows: Iterator[tuple[Command, Session | None]],
    out: IO[str],
    fmt: str,
    stamp: Stamp,
) -> int:
    if fmt == "csv":
        return write_csv(rows, out, stamp)
    text = JsonRecords(stamp).text
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
    add_version_option(parser)
    add_reading_options(parser)
    add_time_options(parser, "commands")
    parser.add_argument("--format", choices=FORMATS, default="json")
    parser.add_argument(
        "--contains", metavar="TEXT", help="only commands holding TEXT (any case)"
    )
    parser.add_argument(
        "--regex", metavar="RE", help="only commands matching this regular expression"
    )
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
        "--verify",
        action="store_true",
        help="prove the store complete and unaltered up to its last signed "
        "checkpoint, or name the first broken link (exit 5)",
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="with --verify: the bastion's public key kept elsewhere "
        "(default DATA_DIR/chain/signing.pub)",
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
        if args.verify:
            from agent.config import reading_config
            from agent.tools.verify import verify

            reading_config(args)
            return verify(args.data_dir, args.public_key, sys.stdout)
        with progress_bar(sys.stderr.isatty() and not args.no_progress) as bar:
            config, reader = open_reading(args, bar.shards if bar else None)
            with reader:
                if args.cast:
                    data = reader.cast(args.cast, args.bastion)
                    _output(args.output, lambda out: out.buffer.write(data))
                    return ExitStatus.SUCCESS
                selection = selection_from_args(
                    args, contains=args.contains, regex=args.regex
                )
                check_matches(PROG, selection, reader)
                stamp = Stamp.of(config)
                records: Iterator[Row]
                if isinstance(reader, LocalReader):
                    selection.python_regex()  # a bad one: refused before any output
                    snapshot = reader.snapshot
                    if bar:
                        bar.start_commands(len(snapshot.commands))
                    records = select(snapshot, selection, bar.commands if bar else None)
                else:
                    records = reader.commands(selection)
                _output(
                    args.output,
                    lambda out: write_records(records, out, args.format, stamp),
                )
        for error in reader.errors:
            print(f"{PROG}: warning: {error}; exported the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if reader.errors else ExitStatus.SUCCESS

    return run_main(PROG, body)


def find_cast(data_dir: Path, name: str) -> Path:
    """The recording of session `name` (an id, or a tag used only once)."""
    return LocalReader(data_dir).cast_file(name)


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
