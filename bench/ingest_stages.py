"""Where the agent's CPU goes with live sessions typing, stage by stage.

    sudo .venv/bin/python -m bench.ingest_stages [--sessions 20] [--seconds 30]
        [--period-s 0.5] [--prefill N]

The real agent, straces and ssh clients of bench/tracer.py's typing window
(a command into each session every --period-s), with the stage timer
(bench/stage_timer.py) loaded into the agent: the thread CPU time of each
stage of the ingest path over the window, counted once (in the innermost
stage), in ms, as a share of the thread's CPU, per call and per command.
The thread's CPU outside every stage is its loop and its waking up.
Beside it, the bytes the agent wrote in the window (/proc/PID/io).

An agent that has run a while has a newest shard part full: a flush rewrites
it whole, so what a flush costs and writes grows with it (up to
SHARD_MAX_BYTES). `--prefill N` stores N commands (bench/store_bench.py's,
chained as the agent chains them) before the agent starts, so that the
window begins with a newest shard of that many.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from bench import stage_timer
from bench.stage_timer import Snapshot
from bench.store_bench import fill
from bench.tracer_load import LiveSessions, Window, pct
from tests import harness

HOOK_DIR = Path(__file__).with_name("stage_hook")
WARM_S = 2.0


@contextmanager
def _hooked(out: Path) -> Iterator[None]:
    """What starts inside inherits the hook; only audit-agent loads it."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_STAGES_OUT")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p
        for p in (str(HOOK_DIR), str(HOOK_DIR.parent.parent), saved["PYTHONPATH"])
        if p
    )
    os.environ["BENCH_STAGES_OUT"] = str(out)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _settled(out: Path) -> Snapshot:
    """What the agent wrote after now."""
    time.sleep(2 * stage_timer.DUMP_S)
    return stage_timer.read(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--period-s", type=float, default=0.5)
    parser.add_argument("--prefill", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.ingest_stages: run as root (strace, sshd, a throwaway user)")
    with tempfile.TemporaryDirectory(prefix="bench-stages.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        out = workdir / "stages.json"
        if args.prefill:
            fill(workdir / "data", args.prefill, chained=True)
        with (
            harness.sshd(workdir) as server,
            harness.test_user(workdir, "bst") as user,
            _hooked(out),
            harness.agent(workdir / "data", poll_interval=0.1) as agent,
        ):
            proc = psutil.Process(agent.process.pid)
            live = LiveSessions(user, server, "st-", args.sessions)
            try:
                time.sleep(WARM_S)
                before, io_before = _settled(out), proc.io_counters()
                window = live.measure(
                    proc, workdir / "data", args.seconds, args.period_s
                )
                after, io_after = _settled(out), proc.io_counters()
                missing, dupes = live.check_stored(workdir / "data")
            finally:
                live.close()
    _report(args, window, before, after, io_after.write_bytes - io_before.write_bytes)
    print(
        f"typed {window.typed}, missing {missing}, duplicated {dupes}; Enter to feed"
        f" p50 {1000 * pct(window.feed_s, 0.5):.0f} ms,"
        f" p95 {1000 * pct(window.feed_s, 0.95):.0f} ms"
    )


def _report(
    args: argparse.Namespace,
    window: Window,
    before: Snapshot,
    after: Snapshot,
    written: int,
) -> None:
    # The stages' window is the agent's, between two of its snapshots.
    seconds = after.at - before.at
    thread_ns = after.threads["ingest"] - before.threads["ingest"]
    rows = []
    for key, (ns, calls) in after.stages.items():
        stage, _, thread = key.rpartition("@")
        if thread != "ingest":
            continue
        ns0, calls0 = before.stages.get(key, (0, 0))
        if calls - calls0:
            rows.append((ns - ns0, calls - calls0, stage))
    commands = max(1, window.typed)
    print(
        f"{args.sessions} sessions typing a command each {args.period_s} s, "
        f"{window.seconds:.0f} s: the agent {window.share(window.agent_cpu_s):.2f} % "
        f"of a core; its ingest thread {100 * thread_ns / 1e9 / seconds:.2f} % over "
        f"the {seconds:.1f} s between the stage timer's snapshots"
    )
    print(
        f"  {'stage':32s} {'ms':>7s} {'share':>6s} {'calls':>7s} "
        f"{'µs/call':>8s} {'µs/command':>10s}"
    )
    staged = 0
    for ns, calls, stage in sorted(rows, reverse=True):
        staged += ns
        print(
            f"  {stage:32s} {ns / 1e6:7.1f} {100 * ns / thread_ns:5.1f}% {calls:7d} "
            f"{ns / 1e3 / calls:8.1f} {ns / 1e3 / commands:10.1f}"
        )
    rest = thread_ns - staged
    print(
        f"  {'outside every stage':32s} {rest / 1e6:7.1f} {100 * rest / thread_ns:5.1f}%"
        f" {'':7s} {'':8s} {rest / 1e3 / commands:10.1f}"
    )
    print(
        f"  written by the agent: {written / seconds / 1e6:.2f} MB/s, "
        f"{written / commands / 1e3:.1f} kB a command"
    )


if __name__ == "__main__":
    main()
