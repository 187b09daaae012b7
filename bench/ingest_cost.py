"""What one typed command costs the agent's ingest path, without the agent.

    .venv/bin/python -m bench.ingest_cost [--sessions 20] [--repeat 5]
        [--profile tottime]

The corpus's real strace logs (bench/corpus/data), each replayed as strace
writes it: a line appended, then a round of the ingest for that log, for
`--sessions` sessions in turn. The path is the agent's own: Ingest,
LogFollower, the terminal emulation, the Recorder, the Store and its Chain
(agent/daemon/), in this process and this thread (the store's writer in its
own). It prints the CPU time of the process and of this thread per command
stored and per round (the runs of one machine differ by up to a fifth: run
it a few times), beside a plain read of the same lines; `--profile` prints
cProfile's top functions, for the question bench.tracer's live figures leave
open: where a typing session's CPU goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from agent.daemon.ingest import Ingest
from agent.daemon.recorder import Recorder
from agent.daemon.signer import Chain, Signer
from agent.daemon.store import Store
from agent.files import Sharing
from agent.reader import load
from bench.accuracy import DATA as CORPUS

START = b"#bastion-audit "
RECORDING_MAX_BYTES = 64 << 20
RECORDING_BURST_MAX_BYTES = 8 << 20


def corpus_logs() -> list[tuple[dict[str, object], list[bytes]]]:
    """(start line's fields, the other lines) of each bash log of the corpus."""
    logs = []
    for path in sorted(CORPUS.glob("*.strace")):
        first, *rest = path.read_bytes().splitlines(keepends=True)
        if first.startswith(START) and not path.stem.endswith("_nm"):
            logs.append((json.loads(first[len(START) :]), rest))
    return logs


def replay(workdir: Path, sessions: int, repeat: int, profile: str | None) -> None:
    logs = corpus_logs()
    data = workdir / "data"
    (data / "logs").mkdir(parents=True, mode=0o700)
    store = Store(data / "store", 0.2)
    store.chain = Chain(Signer.load_or_create(data), data)
    recorder = Recorder(data, RECORDING_MAX_BYTES, RECORDING_BURST_MAX_BYTES, Sharing())
    ingest = Ingest(data / "logs", store, retention_s=3600.0, recorder=recorder)
    store.on_flushed = ingest.on_flushed
    store.open()
    store.start()
    profiler = cProfile.Profile() if profile else None
    rounds = 0
    paths = []
    cpu0, wall0, own0 = time.process_time(), time.monotonic(), time.thread_time()
    # `sessions` at once, each a log of the corpus with its own start line;
    # then the next `sessions`, `repeat` times.
    for r in range(repeat):
        plan = []
        for k in range(sessions):
            n = r * sessions + k
            fields, rest = logs[n % len(logs)]
            start = {**fields, "tag": f"s{n}", "ssh_pid": 40_000 + n}
            path = data / "logs" / f"s{n}.strace"
            f = open(path, "wb")  # noqa: SIM115 (closed below)
            f.write(START + json.dumps(start).encode() + b"\n")
            plan.append((path, f, rest))
            paths.append(path)
        if profiler:
            profiler.enable()
        for i in range(max(len(lines) for _, _, lines in plan)):
            for path, f, lines in plan:
                if i < len(lines):
                    f.write(lines[i])
                    f.flush()
                    ingest.process(path)
                    rounds += 1
        if profiler:
            profiler.disable()
        for _, f, _ in plan:
            f.close()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    own = time.thread_time() - own0  # the ingest's part, without the writer
    store.stop()
    stored = len(load(data).commands)
    total = sum(path.stat().st_size for path in paths)
    t = time.process_time()
    for path in paths:
        with path.open("rb") as f:
            for _ in f:
                pass
    plain = time.process_time() - t
    print(
        f"{sessions} sessions, {len(logs)} corpus logs, {rounds} rounds, "
        f"{total / 1e6:.1f} MB of log, {stored} commands stored: "
        f"{cpu:.2f} s CPU in {wall:.2f} s; {cpu / max(stored, 1) * 1000:.2f} ms "
        f"a command, {cpu / rounds * 1e6:.0f} us a round (the ingest's thread "
        f"{own / max(stored, 1) * 1000:.2f} ms and {own / rounds * 1e6:.0f} us); "
        f"a plain read of the logs {plain * 1000:.1f} ms"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(profile).print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", metavar="SORT", help="cProfile, sorted by SORT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        replay(Path(tmp), args.sessions, args.repeat, args.profile)


if __name__ == "__main__":
    main()
