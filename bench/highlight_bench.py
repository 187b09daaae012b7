"""The risk rules on hostile command text: does the cost grow linearly?

Every record carries `risk` (agent/highlight.py), so the rules run on each
stored command in exports, audit-tail and the fleet events, and a command's
text is whatever a user typed or pasted. For each hostile pattern (a rule's
first word repeated), the time of all built-in rules at sizes that double,
side by side; a ratio near 2 per doubling is linear, near 4 quadratic.

    .venv/bin/python -m bench.highlight_bench [--sizes 25000,50000,100000,200000]
"""

from __future__ import annotations

import argparse
import time

from agent.highlight import BUILTIN_RULES, Risk

UNITS = ("rm ", "rm -r /", "chmod -R ", "curl ", "dd ", "nc ", ">", "ls -l ")


def seconds(text: str) -> float:
    risk = Risk(BUILTIN_RULES)  # a fresh one: no answer kept from before
    t0 = time.perf_counter()
    risk.names(text)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,50000,100000,200000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print("unit".ljust(12) + "".join(f"{n:>14,}" for n in sizes) + "   ratio/doubling")
    for unit in UNITS:
        times = [seconds(unit * (n // len(unit))) for n in sizes]
        ratios = [b / a for a, b in zip(times, times[1:], strict=False) if a > 0]
        print(
            repr(unit).ljust(12)
            + "".join(f"{t * 1000:>12.1f}ms" for t in times)
            + "   "
            + " ".join(f"{r:.2f}" for r in ratios)
        )


if __name__ == "__main__":
    main()
