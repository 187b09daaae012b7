"""A local store exported a shard at a time: the selection, the records' text.

Each shard's commands are selected and encoded on their own (the sessions
were all read first), so the shards can be formatted in worker processes,
`jobs` of them forked from this one (they share its sessions, unpickled).
Each leaves a shard's text in a private spool directory (in memory, under
/dev/shm, when it can), and this process has the kernel copy them to the
output in the store's order. An export is CPU work per shard (its JSON
decoded, every record encoded): see bench/store_bench.py for one process
beside the workers. The workers run at EXPORT_NICE: on a bastion that is
busy, the sessions' ssh and strace go first. At most AHEAD_PER_JOB shards a
worker wait to be written, so a slow reader of the output holds up the
workers, not the memory.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import IO

from agent.export_record import CsvRecords, JsonRecords, Stamp
from agent.files import write_whole
from agent.reader import StoreScan
from agent.records import CommandDocument, Session
from agent.tools.options import Filter

EXPORT_NICE = 10
AHEAD_PER_JOB = 2


def select(
    store: StoreScan,
    selection: Filter,
    scanned: Callable[[int], None] | None = None,
) -> Iterator[list[CommandDocument]]:
    """The selected commands of a local store, a shard's at a time, in order.

    What Selection.command_matches takes, on the documents: the session's
    part once per session, the rest inline. `scanned(n)` hears how many
    commands were looked at, after each shard.
    """
    wanted = _Wanted(selection, store.sessions)
    since, until = selection.since, selection.until
    contains = selection.contains.lower() if selection.contains else None
    regex = selection.python_regex()
    everything = selection == Filter()
    n = 0
    for docs in store.commands():
        n += len(docs)
        if not everything:
            docs = [
                d
                for d in docs
                if wanted[d["session"]]
                and (since is None or d["time"] >= since)
                and (until is None or d["time"] <= until)
                and (contains is None or contains in d["command"].lower())
                and (regex is None or regex.search(d["command"]) is not None)
            ]
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
        session = self.sessions.get(sid)
        chosen = self.selection
        ok = self[sid] = not (
            chosen.session and session is None and sid != chosen.session
        ) and chosen.session_matches(session)
        return ok


@dataclass(frozen=True, slots=True)
class Framing:
    """What a format writes around and between its records."""

    records: CsvRecords | JsonRecords
    head: str  # before everything
    first: str  # before the first record
    separator: str  # between two records
    last: str  # after the last record
    empty: str  # instead of first ... last when there is no record

    @classmethod
    def of(cls, fmt: str, stamp: Stamp) -> Framing:
        if fmt == "csv":
            records = CsvRecords(stamp)
            return cls(records, records.header(), "", "", "", "")
        if fmt == "jsonl":
            return cls(JsonRecords(stamp), "", "", "\n", "\n", "")
        return cls(JsonRecords(stamp), "[", "\n  ", ",\n  ", "\n]\n", "]\n")


def write_documents(
    batches: Iterator[list[CommandDocument]],
    sessions: dict[str, Session],
    out: IO[str],
    fmt: str,
    stamp: Stamp,
) -> int:
    """The records of a local store in `fmt`, a batch per write; how many.

    Byte for byte what write_records() writes for the same commands.
    """
    framing = Framing.of(fmt, stamp)
    out.write(framing.head)
    count = 0
    for docs in batches:
        if docs:
            texts = framing.records.documents(docs, sessions)
            out.write(
                (framing.separator if count else framing.first)
                + framing.separator.join(texts)
            )
            count += len(texts)
    out.write(framing.last if count else framing.empty)
    return count


@dataclass(frozen=True, slots=True)
class ShardText:
    """One shard's selected records, joined and encoded (a worker's answer)."""

    part: Path  # the text, in the output's encoding, in the job's spool
    size: int
    count: int
    scanned: int  # its commands, selected or not
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Job:
    shards: tuple[tuple[Path, tuple[int, int, int]], ...]
    sessions: dict[str, Session]
    selection: Filter
    framing: Framing
    encoding: str  # the output's
    errors: str
    spool: Path  # a private directory the workers' text waits in


_job: _Job | None = None  # the parent's, before the workers fork: theirs too


def _format_shard(index: int) -> ShardText:
    """In a worker: shard `index` of the job, selected and encoded."""
    assert _job is not None
    path, signature = _job.shards[index]
    one = StoreScan(shards={path: signature}, sessions=_job.sessions)
    texts: list[str] = []
    scanned = 0

    def seen(n: int) -> None:
        nonlocal scanned
        scanned = n

    for docs in select(one, _job.selection, seen):
        if docs:
            texts += _job.framing.records.documents(docs, one.sessions)
    data = _job.framing.separator.join(texts).encode(_job.encoding, _job.errors)
    part = _job.spool / f"{index}.part"
    try:
        write_whole(part, data)
    except OSError as e:  # the spool's disk, not the output
        raise OSError(e.errno, e.strerror, str(part)) from e
    return ShardText(part, len(data), len(texts), scanned, tuple(one.errors))


def _worker_start() -> None:
    os.nice(EXPORT_NICE)
    # Ctrl-C reaches the whole process group: the parent stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def write_in_jobs(
    store: StoreScan,
    selection: Filter,
    out: IO[str],
    fmt: str,
    stamp: Stamp,
    jobs: int,
    scanned: Callable[[int], None] | None = None,
) -> int:
    """What select() and write_documents() write, the shards formatted by `jobs`
    forked workers; their errors join `store.errors`, in the shards' order."""
    global _job
    framing = Framing.of(fmt, stamp)
    # The workers encode the text and leave it in a spool file, which the
    # kernel copies to the output (sendfile): through multiprocessing's pipe
    # 1,000,000 JSON records (630 MB) cost this process 2 s of CPU to read,
    # unpickle and write, and the export took 0.94 the time of one process.
    encoding = getattr(out, "encoding", None) or "utf-8"
    errors = getattr(out, "errors", None) or "strict"
    spool = Path(tempfile.mkdtemp(prefix="audit-export.", dir=_spool_dir()))
    _job = _Job(
        tuple(store.shards.items()),
        store.sessions,
        selection,
        framing,
        encoding,
        errors,
        spool,
    )
    count = looked = 0
    try:
        out.write(framing.head)
        out.flush()
        # fork: the workers start with this process's sessions, unpickled.
        context = multiprocessing.get_context("fork")
        with context.Pool(jobs, initializer=_worker_start) as pool:
            indices = iter(range(len(_job.shards)))
            waiting: deque[AsyncResult[ShardText]] = deque()

            def ask() -> None:
                index = next(indices, None)
                if index is not None:
                    waiting.append(pool.apply_async(_format_shard, (index,)))

            for _ in range(jobs * AHEAD_PER_JOB):
                ask()
            while waiting:
                shard = waiting.popleft().get()
                ask()
                store.errors.extend(shard.errors)
                looked += shard.scanned
                if scanned is not None:
                    scanned(looked)
                if shard.count:
                    out.write(framing.separator if count else framing.first)
                    out.flush()
                    _pass_on(shard, out, encoding, errors)
                    count += shard.count
                shard.part.unlink()
    finally:
        _job = None
        shutil.rmtree(spool, ignore_errors=True)
    out.write(framing.last if count else framing.empty)
    return count


def _spool_dir() -> str | None:
    """/dev/shm (memory) when this user may write there, else the temp directory."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _pass_on(shard: ShardText, out: IO[str], encoding: str, errors: str) -> None:
    """The shard's text to `out` (flushed), copied by the kernel where it can."""
    with open(shard.part, "rb") as part:
        try:
            fd = out.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: in memory
            out.write(part.read().decode(encoding, errors))
            return
        offset = 0
        while offset < shard.size:
            try:
                sent = os.sendfile(fd, part.fileno(), offset, shard.size - offset)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                # Not every output takes sendfile (O_APPEND: `>>`): copied here.
                part.seek(offset)
                shutil.copyfileobj(part, out.buffer)  # type: ignore[attr-defined]
                out.flush()
                return
            if sent == 0:
                raise OSError(f"the export's spool file {shard.part} was cut short")
            offset += sent
