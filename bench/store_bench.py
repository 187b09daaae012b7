"""Store growth: ingest cost per command and export time at 10k, 100k, 1M commands.

Synthetic sessions and commands go through the real store code (Store.submit,
the writer's atomic flushes, shard roll-over), then the real export path
(reader.scan, export_shards.select and write_documents) writes JSON to
/dev/null, with the built-in risk rules (every record's `risk`) and, side by
side, without; and with audit-export's forked workers (`--jobs`, its
default) beside one process, alternated.
The same commands are stored again with the hash chain and its signed
checkpoints on (the agent's way), side by side, and that store is verified
the way `audit-export --verify` does. Then a flood of new sessions (what a
spool of connection records makes): many sessions in one flush, whose cost
per session must not grow with their number. Everything is measured side by
side in one run; the ratios are what to read.

    .venv/bin/python -m bench.store_bench [--sizes 10000,100000,1000000]
                                          [--formats json,jsonl,csv]
                                          [--sessions 2000,20000] [--jobs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from agent.chain import PublicKey, public_key_path, read_head, read_prunes
from agent.chain_verify import verify_store
from agent.daemon.signer import Chain, Signer
from agent.daemon.store import Store
from agent.export_record import Stamp
from agent.highlight import BUILTIN_RULES
from agent.reader import scan
from agent.records import Command, Session, iso
from agent.shards import list_shards
from agent.tools.export import DEFAULT_JOBS
from agent.tools.export_shards import select, write_documents, write_in_jobs
from agent.tools.options import Filter
from parsers.events import Checkpoint
from tracer.session_log import SessionStart

COMMANDS_PER_SESSION = 1000
BATCH = 50  # commands handed to the store between two flushes


def session(n: int) -> Session:
    start = SessionStart(
        tag=f"bench{n}",
        ssh_pid=10_000 + n,
        start_ticks=n,
        started_at=1_800_000_000.0 + n,
        uid=1000,
        user="alice",
        tty="/dev/pts/3",
        argv=("ssh", "bob@db1"),
    )
    return Session.new(f"bench{n}", start, f"bench{n}.strace")


def fill(
    data_dir: Path, total: int, chained: bool = False
) -> tuple[float, float, float]:
    """Write `total` commands; seconds per command in the first and last 10%, total s."""
    chain = Chain(Signer.load_or_create(data_dir), data_dir) if chained else None
    store = Store(data_dir / "store", flush_interval_s=1.0, chain=chain)
    store.open()
    written = 0
    marks: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    sid = 0
    while written < total:
        s = session(sid)
        for first in range(1, COMMANDS_PER_SESSION + 1, BATCH):
            count = min(BATCH, total - written, COMMANDS_PER_SESSION - first + 1)
            if count <= 0:
                break
            cmds = [
                Command(
                    s.id,
                    first + i,
                    iso(1_800_000_000.0 + written + i),
                    f"ls -l /srv/data/{written + i} | grep -v tmp",
                )
                for i in range(count)
            ]
            s = dataclasses.replace(
                s,
                command_count=first + count - 1,
                checkpoint=Checkpoint(written * 80, 0, 24, 80, True, "$ "),
            )
            store.submit(s, cmds)
            store.flush()
            written += count
            marks.append((written, time.perf_counter()))
        sid += 1
    store.stop()
    elapsed = time.perf_counter() - t0

    def per_command(lo: float, hi: float) -> float:
        sel = [(w, t) for w, t in marks if lo * total <= w <= hi * total]
        (w0, t0_), (w1, t1) = sel[0], sel[-1]
        return (t1 - t0_) / max(1, w1 - w0)

    return per_command(0.0, 0.1), per_command(0.9, 1.0), elapsed


def export_seconds(
    data_dir: Path, fmt: str = "json", rules: bool = True, jobs: int = 1
) -> tuple[float, float, int]:
    """Wall and CPU seconds of an export of everything; how many records.

    As audit-export runs it (`jobs` > 1: its forked workers, their CPU
    counted too); rules=False: no risk rules at all. CPU time is what to
    compare on a shared machine: wall time counts the other processes'
    turns too.
    """
    stamp = Stamp("bench", BUILTIN_RULES if rules else ())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, c0 = time.perf_counter(), time.process_time()
    store = scan(data_dir)
    with open(os.devnull, "w") as out:
        if jobs > 1:
            count = write_in_jobs(store, Filter(), out, fmt, stamp, jobs)
        else:
            batches = select(store, Filter())
            count = write_documents(batches, store.sessions, out, fmt, stamp)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    return wall, cpu, count


def jobs_side_by_side(
    data_dir: Path, jobs: int, rounds: int = 3
) -> tuple[float, float, float, float]:
    """One process and `jobs` workers, alternated: the best wall and CPU of each."""
    one, many = [], []
    for _ in range(rounds):
        one.append(export_seconds(data_dir)[:2])
        many.append(export_seconds(data_dir, jobs=jobs)[:2])
    return (
        min(w for w, _ in one),
        min(c for _, c in one),
        min(w for w, _ in many),
        min(c for _, c in many),
    )


def session_flood(count: int) -> tuple[float, float]:
    """CPU and wall seconds of one flush that stores `count` new sessions."""
    tmp = Path(tempfile.mkdtemp(prefix="store-bench."))
    try:
        store = Store(tmp / "store", flush_interval_s=1.0)
        store.open()
        for n in range(count):
            store.submit(session(n))
        c0, t0 = time.process_time(), time.perf_counter()
        store.flush()
        return time.process_time() - c0, time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp)


def print_floods(counts: list[int]) -> None:
    print()
    print(f"{'sessions':>10} {'flush cpu s':>12} {'flush s':>8} {'µs/session':>11}")
    base = 0.0
    for count in counts:
        cpu, wall = session_flood(count)
        per = cpu / count
        base = base or per
        print(
            f"{count:>10} {cpu:>12.2f} {wall:>8.2f} {per * 1e6:>11.1f}"
            f"  x{per / base:.2f} per session vs {counts[0]}"
        )


def risk_side_by_side(data_dir: Path, rounds: int = 3) -> tuple[float, float]:
    """Exports with the built-in rules and without, alternated; the best of each."""
    with_rules, without = [], []
    for _ in range(rounds):
        with_rules.append(export_seconds(data_dir)[0])
        without.append(export_seconds(data_dir, rules=False)[0])
    return min(with_rules), min(without)


def open_seconds(data_dir: Path, chained: bool) -> float:
    """The agent's start: the store opened (and, chained, verified)."""
    chain = Chain(Signer.load_or_create(data_dir), data_dir) if chained else None
    t0 = time.perf_counter()
    Store(data_dir / "store", flush_interval_s=1.0, chain=chain).open()
    return time.perf_counter() - t0


def verify_seconds(data_dir: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    key = PublicKey.read(public_key_path(data_dir))
    store_dir = data_dir / "store"
    report = verify_store(
        list_shards(store_dir), key, read_prunes(store_dir), read_head(data_dir)
    )
    assert report.broken is None, report.broken
    return time.perf_counter() - t0, report.links["command"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--formats", default="json", help="export formats to time")
    parser.add_argument(
        "--sessions", default="2000,20000", help="new sessions in one flush"
    )
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, help="audit-export's workers"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = ["json", *(f for f in args.formats.split(",") if f != "json")]
    by_format: list[tuple[int, dict[str, float]]] = []
    no_risk: list[tuple[int, float, float]] = []
    in_jobs: list[tuple[int, float, float, float, float]] = []
    rows = []
    chain_rows = []
    for total in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="store-bench."))
        chained = Path(tempfile.mkdtemp(prefix="store-bench-chain."))
        try:
            first, last, elapsed = fill(tmp, total)
            exp, cpu, count = export_seconds(tmp)
            assert count == total, (count, total)
            by_format.append((total, {f: export_seconds(tmp, f)[0] for f in formats}))
            no_risk.append((total, *risk_side_by_side(tmp)))
            in_jobs.append((total, *jobs_side_by_side(tmp, args.jobs)))
            size = sum(p.stat().st_size for p in (tmp / "store").iterdir())
            rows.append((total, first, last, elapsed, exp, cpu, size))
            _, _, chain_elapsed = fill(chained, total, chained=True)
            chain_exp = export_seconds(chained)[0]
            verify_s, verified = verify_seconds(chained)
            assert verified == total, (verified, total)
            chain_size = sum(p.stat().st_size for p in (chained / "store").iterdir())
            opens = (
                open_seconds(tmp, False),
                open_seconds(chained, True),  # walks every shard
                open_seconds(chained, True),  # the shards verified before: skipped
            )
            chain_rows.append(
                (total, elapsed, chain_elapsed, exp, chain_exp, verify_s)
                + (size, chain_size, *opens)
            )
        finally:
            shutil.rmtree(tmp)
            shutil.rmtree(chained)
    base = rows[0]
    print(
        f"{'commands':>10} {'ingest/s':>10} {'µs/cmd first10%':>16} {'µs/cmd last10%':>15}"
        f" {'last/first':>10} {'export s':>9} {'export cpu s':>13}"
        f" {'cpu/cmd vs first':>17} {'store MB':>9}"
    )
    for total, first, last, elapsed, exp, cpu, size in rows:
        print(
            f"{total:>10} {total / elapsed:>10.0f} {first * 1e6:>16.1f} {last * 1e6:>15.1f}"
            f" {last / first:>10.2f} {exp:>9.2f} {cpu:>13.2f}"
            f" {(cpu / total) / (base[5] / base[0]):>17.2f} {size / 1e6:>9.1f}"
        )
    print()
    print(f"{'commands':>10} {'export s':>9} {'no rules s':>11} {'risk cost':>10}")
    for total, with_rules, without in no_risk:
        print(
            f"{total:>10} {with_rules:>9.2f} {without:>11.2f}"
            f" {with_rules / without:>10.2f}"
        )
    print()
    print(
        f"{'commands':>10} {'1 process s':>12} {'cpu s':>6}"
        f" {f'{args.jobs} jobs s':>10} {'cpu s':>6} {'wall ratio':>11}"
    )
    for total, one_s, one_cpu, many_s, many_cpu in in_jobs:
        print(
            f"{total:>10} {one_s:>12.2f} {one_cpu:>6.2f} {many_s:>10.2f}"
            f" {many_cpu:>6.2f} {many_s / one_s:>11.2f}"
        )
    print()
    print(
        f"{'commands':>10} {'ingest/s off':>12} {'ingest/s on':>12} {'on/off':>7}"
        f" {'export s on/off':>16} {'verify s':>9} {'verify cmd/s':>13}"
        f" {'store MB on/off':>16} {'start s off/on first/on again':>30}"
    )
    for row in chain_rows:
        total, off_s, on_s, exp_off, exp_on, verify_s, size, chain_size = row[:8]
        open_off, open_first, open_again = row[8:]
        print(
            f"{total:>10} {total / off_s:>12.0f} {total / on_s:>12.0f}"
            f" {off_s / on_s:>7.2f} {exp_on:>7.2f}/{exp_off:<8.2f} {verify_s:>9.2f}"
            f" {total / verify_s:>13.0f} {chain_size / 1e6:>7.1f}/{size / 1e6:<8.1f}"
            f" {open_off:>12.2f}/{open_first:.2f}/{open_again:.2f}"
        )
    if formats != ["json"]:
        print()
        print(
            f"{'commands':>10}"
            + "".join(f" {f + ' s':>9}" for f in formats)
            + "  vs json"
        )
        for total, seconds in by_format:
            ratios = " ".join(
                f"{f}={seconds[f] / seconds['json']:.2f}" for f in formats
            )
            print(
                f"{total:>10}"
                + "".join(f" {seconds[f]:>9.2f}" for f in formats)
                + f"  {ratios}"
            )

    if args.sessions:
        print_floods([int(n) for n in args.sessions.split(",")])


if __name__ == "__main__":
    main()
