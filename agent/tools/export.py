"""audit-export: commands with their sessions' fields, as JSON, JSON Lines or CSV.

From this bastion's store the commands are streamed: every session first,
then the stored documents a shard at a time, encoded straight to text
(reader.scan, export_shards.py, export_record's JsonRecords and CsvRecords),
in forked workers when there are shards enough, so that a million commands
take a few seconds and a flat cost each. From the fleet store, the
reader's rows.

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

from agent.exits import ExitStatus, run_main
from agent.export_record import CsvRecords, JsonRecords, Stamp
from agent.local_reader import LocalReader
from agent.reader import scan
from agent.reading import Row
from agent.records import Command, Session
from agent.tools.export_shards import (
    Framing,
    select,
    write_documents,
    write_in_jobs,
)
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
DEFAULT_JOBS = min(4, len(os.sched_getaffinity(0)))


def write_csv(
    rows: Iterator[tuple[Command, Session | None]], out: IO[str], stamp: Stamp
) -> int:
    """RFC 4180 CSV with a header row of FIELDS; a missing value is empty.

    `risk` is the rules' names separated by spaces (a name has none). Text
    cells go through escape.csv_cell (export_record.CsvRecords): they are
    what users typed.
    """
    records = CsvRecords(stamp)
    out.write(records.header())
    values = records.values
    count = 0

    def lines() -> Iterator[tuple[Any, ...]]:
        nonlocal count
        for command, session in rows:
            count += 1
            yield values(command, session)

    csv.writer(out).writerows(lines())  # the loop over rows stays in C
    return count


def write_records(
    rows: Iterator[tuple[Command, Session | None]],
    out: IO[str],
    fmt: str,
    stamp: Stamp,
) -> int:
    if fmt == "csv":
        return write_csv(rows, out, stamp)  # csv.writer's loop, in C
    framing = Framing.of(fmt, stamp)
    assert isinstance(framing.records, JsonRecords)
    text, separator = framing.records.text, framing.separator
    out.write(framing.head)
    count = 0
    for command, session in rows:
        out.write((separator if count else framing.first) + text(command, session))
        count += 1
    out.write(framing.last if count else framing.empty)
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
        "--jobs",
        type=_jobs,
        default=DEFAULT_JOBS,
        metavar="N",
        help="format this bastion's shards in N processes "
        f"(default {DEFAULT_JOBS}: the CPUs, at most 4; 1: in this one)",
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
                stamp = Stamp.of(config)
                if isinstance(reader, LocalReader):
                    errors = export_local(reader, selection, args, bar, stamp)
                else:
                    check_matches(PROG, selection, reader)
                    records: Iterator[Row] = reader.commands(selection)
                    _output(
                        args.output,
                        lambda out: write_records(records, out, args.format, stamp),
                    )
                    errors = reader.errors
        for error in errors:
            print(f"{PROG}: warning: {error}; exported the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if errors else ExitStatus.SUCCESS

    return run_main(PROG, body)


def export_local(
    reader: LocalReader,
    selection: Filter,
    args: argparse.Namespace,
    bar: _Bar | None,
    stamp: Stamp,
) -> list[str]:
    """Stream this bastion's store to the output; what could not be read."""
    selection.python_regex()  # a bad one: refused before any output
    store = scan(reader.data_dir, bar.shards if bar else None)
    named = Filter(
        session=selection.session,
        user=selection.user,
        host=selection.host,
        bastion=selection.bastion,
    )
    if not any(named.session_matches(s) for s in store.sessions.values()):
        # No session the filters name: check_matches says so (it reads the
        # store the slow way, for a command whose session document is gone).
        check_matches(PROG, selection, reader)
    if bar:
        # What the sessions say they hold; the bar ends at what was read.
        bar.start_commands(sum(s.command_count for s in store.sessions.values()))
    scanned = bar.commands if bar else None
    if args.jobs > 1 and len(store.shards) > 1:
        _output(
            args.output,
            lambda out: write_in_jobs(
                store, selection, out, args.format, stamp, args.jobs, scanned
            ),
        )
        return store.errors
    batches = select(store, selection, scanned)
    _output(
        args.output,
        lambda out: write_documents(batches, store.sessions, out, args.format, stamp),
    )
    return store.errors


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if not 1 <= jobs <= 64:
        raise argparse.ArgumentTypeError(
            f"not a number of processes from 1 to 64: {text!r}"
        )
    return jobs


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
    """To stdout, or to a temporary file beside FILE renamed over it.

    A write that fails names the output (a write error carries no file name:
    a full disk said only `No space left on device`).
    """
    if not output or output == "-":
        with _naming("standard output"):
            write(sys.stdout)
            sys.stdout.flush()
        return
    path = Path(output)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with _naming(output), os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextlib.contextmanager
def _naming(target: str) -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, target) from e


if __name__ == "__main__":
    sys.exit(main())
