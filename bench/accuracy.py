"""Parser accuracy on the fidelity corpus, against what bash itself recorded.

    .venv/bin/python -m bench.accuracy [-v]

For every session in bench/corpus/data: the commands the parser reconstructs
from the log, aligned with bash's history (normalised as in
bench/corpus/runner.normalise). Prints the exact-match rate of executed
commands, the ones missed and the ones invented, per group and in all.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus.cases import CASES
from bench.corpus.runner import normalise
from parsers.pipeline import commands_from_log

DATA = Path(__file__).parent / "corpus" / "data"


@dataclass
class Score:
    truth: int = 0
    matched: int = 0
    missed: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)


def score_case(name: str) -> tuple[Score, list[str], list[str]]:
    # A line of blanks is no command: bash keeps one in its history (HISTCONTROL
    # is empty in the corpus), we do not.
    truth = [
        t for t in json.loads((DATA / f"{name}.truth.json").read_text()) if t.strip()
    ]
    ours = [c.text for c in commands_from_log((DATA / f"{name}.strace").read_bytes())]
    a, b = [normalise(t) for t in truth], [normalise(o) for o in ours]
    score = Score(truth=len(a))
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(
        a=a, b=b, autojunk=False
    ).get_opcodes():
        if op == "equal":
            score.matched += i2 - i1
        else:
            score.missed += [f"{name}: {t!r}" for t in truth[i1:i2]]
            score.invented += [f"{name}: {o!r}" for o in ours[j1:j2]]
    return score, truth, ours


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    groups: dict[str, Score] = defaultdict(Score)
    total = Score()
    sessions = 0
    for case in CASES:
        if not (DATA / f"{case.name}.strace").exists():
            continue
        sessions += 1
        score, truth, ours = score_case(case.name)
        for agg in (groups[case.group], total):
            agg.truth += score.truth
            agg.matched += score.matched
            agg.missed += score.missed
            agg.invented += score.invented
        if args.verbose and (score.missed or score.invented):
            print(f"{case.name}\n  truth: {truth}\n  ours:  {ours}")
    print(f"{'group':<12} {'commands':>8} {'exact':>7} {'missed':>7} {'invented':>9}")
    for name, s in sorted(groups.items()):
        rate = 100.0 * s.matched / s.truth if s.truth else 100.0
        print(
            f"{name:<12} {s.truth:>8} {rate:>6.1f}% {len(s.missed):>7} {len(s.invented):>9}"
        )
    rate = 100.0 * total.matched / total.truth if total.truth else 100.0
    print(
        f"{'all':<12} {total.truth:>8} {rate:>6.1f}% {len(total.missed):>7} "
        f"{len(total.invented):>9}   ({sessions} sessions)"
    )
    for line in total.missed:
        print(f"missed   {line}")
    for line in total.invented:
        print(f"invented {line}")


if __name__ == "__main__":
    main()
