"""audit-export: commands with their sessions' fields, as JSON, JSON Lines or CSV.

Also a session's recording (`--cast TAG`), as the asciicast v2 file it is.
The fields are documented in the README and in schema/export-record.schema.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from agent.casts import CastError, cast_path, read_cast
from agent.config import reading_config
from agent.exits import ExitStatus, run_main
from agent.export_record import CsvRecords, JsonRecords
from agent.reader import StoreScan, load, scan
from agent.records import CommandDocument, Session
from agent.tools.options import Filter, add_reading_options, add_time_options

PROG = "audit-export"
FORMATS = ("json", "jsonl", "csv")


def select(
    store: StoreScan,
    selection: Filter,
    scanned: Callable[[int], None] | None = None,
) -> Iterator[list[CommandDocument]]:
    """The selected commands, a shard's at a time, in the order stored.

    `scanned(n)` hears how many commands were looked at, after each shard.
    """
    sessions = store.sessions
    wanted = _Wanted(selection, sessions)
    since, until = selection.since, selection.until
    everything = selection == Filter()
    n = 0
    for docs in store.commands():
        if not everything:
            docs = [
                d
                for d in docs
                if wanted[d["session"]]
                and (since is None or d["time"] >= since)
                and (until is None or d["time"] <= until)
            ]
        n += len(docs)
        if scanned is not None:
            scanned(n)
        yield docs


class _Wanted(dict[str, bool]):
    """Per session id: does the selection take its session's commands."""

    def __init__(self, selection: Filter, sessions: dict[str, Session]) -> None:
        super().__init__()
        self.selection = selection
        self.sessions = sessions

    def __missing__(self, sid: str) -> bool:
        ok = self[sid] = self.selection.session_id_matches(sid, self.sessions.get(sid))
        return ok


def write_records(
    batches: Iterator[list[CommandDocument]],
    sessions: dict[str, Session],
    out: IO[str],
    fmt: str,
) -> int:
    """The records in `fmt`, a batch per write; how many."""
    records: CsvRecords | JsonRecords
    if fmt == "csv":
        records = CsvRecords()
        out.write(records.header())
        separator, first, last, empty = "", "", "", ""
    elif fmt == "jsonl":
        records = JsonRecords()
        separator, first, last, empty = "\n", "", "\n", ""
    else:
        records = JsonRecords()
        out.write("[")
        separator, first, last, empty = ",\n  ", "\n  ", "\n]\n", "]\n"
    count = 0
    for docs in batches:
        if docs:
            texts = records.documents(docs, sessions)
            out.write((separator if count else first) + separator.join(texts))
            count += len(texts)
    out.write(last if count else empty)
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
            store = scan(args.data_dir, bar.shards if bar else None)
            if bar:
                # What the sessions say they hold; the bar ends at what was read.
                bar.start_commands(
                    sum(s.command_count for s in store.sessions.values())
                )
            batches = select(store, selection, bar.commands if bar else None)
            _output(
                args.output,
                lambda out: write_records(batches, store.sessions, out, args.format),
            )
        for error in store.errors:
            print(f"{PROG}: warning: {error}; exported the rest", file=sys.stderr)
        return ExitStatus.PARTIAL if store.errors else ExitStatus.SUCCESS

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
