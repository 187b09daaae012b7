"""The parser with pyte's own byte stream beside it with ours (terminal_stream.py).

    .venv/bin/python -m bench.stream_bench [--rounds 15]

The corpus's real strace logs (bench/corpus/data), decoded once, then fed
through the whole pipeline (terminal emulation and command assembly) with
each stream in turn, alternated round by round; it prints the median CPU
time per command stored of each, and their ratio. The commands must be the
same with both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import pyte

from bench.accuracy import DATA as CORPUS
from parsers import terminal
from parsers.events import Event
from parsers.pipeline import CommandPipeline
from parsers.strace_lines import StraceDecoder
from parsers.terminal_stream import TerminalStream


def decoded() -> list[list[Event]]:
    logs = []
    for path in sorted(CORPUS.glob("*.strace")):
        decoder = StraceDecoder(tty=None)
        logs.append(decoder.feed(path.read_bytes()) + decoder.finish())
    return logs


def parse(logs: list[list[Event]], stream: type[pyte.ByteStream]) -> tuple[float, list]:
    """CPU seconds to parse every log, and the commands."""
    commands = []
    with mock.patch.object(terminal, "TerminalStream", stream):
        start = time.process_time()
        for events in logs:
            pipeline = CommandPipeline()
            for event in events:
                commands += pipeline.feed(event)
        return time.process_time() - start, commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    logs = decoded()
    streams = {"pyte.ByteStream": pyte.ByteStream, "TerminalStream": TerminalStream}
    seconds: dict[str, list[float]] = {name: [] for name in streams}
    found: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, stream in streams.items():
            spent, found[name] = parse(logs, stream)
            seconds[name].append(spent)
    if found["pyte.ByteStream"] != found["TerminalStream"]:
        print("the two streams gave different commands")
        return 1
    n = len(found["TerminalStream"])
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"{len(logs)} logs, {n} commands, median of {args.rounds} rounds each")
    for name, median in medians.items():
        print(f"  {name:16} {1e6 * median / n:8.1f} µs of CPU a command")
    ratio = medians["TerminalStream"] / medians["pyte.ByteStream"]
    print(f"  ours / pyte's: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
