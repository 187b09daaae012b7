"""Parser accuracy on the fidelity corpus, against what the shells recorded.

    .venv/bin/python -m bench.accuracy [-v]

For every session in bench/corpus/data: the commands the parser reconstructs
from the log, aligned with the shell's own history (normalised as in
bench/corpus/runner.normalise), or with the case's list for shells that keep
none. Prints the exact-match rate of executed commands, the ones missed and
the ones invented, per group, per path (readline's markers, the fallback,
sessions that change shells) and in all; then the program inputs and hidden
lines the cases expect, and the sessions that are exact.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus.cases import CASES, Case
from bench.corpus.runner import normalise
from parsers.events import LineKind
from parsers.pipeline import commands_from_log

DATA = Path(__file__).parent / "corpus" / "data"
SHOWN_CHARS = 100  # a missed or invented command is shown this far


@dataclass
class Score:
    truth: int = 0
    matched: int = 0
    missed: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    sessions: int = 0
    exact: int = 0

    def add(self, other: Score) -> None:
        self.truth += other.truth
        self.matched += other.matched
        self.missed += other.missed
        self.invented += other.invented
        self.sessions += other.sessions
        self.exact += other.exact


@dataclass(frozen=True)
class Found:
    """One record as the comparison sees it (from the parser or an export)."""

    kind: str
    text: str
    program: str | None = None


def score_case(case: Case) -> tuple[Score, list[str], list[str]]:
    name = case.name
    truth = json.loads((DATA / f"{name}.truth.json").read_text())
    found = [
        Found(c.kind, c.text, c.program)
        for c in commands_from_log((DATA / f"{name}.strace").read_bytes())
    ]
    return compare(case, truth, found)


def compare(
    case: Case, history: list[str], found: list[Found]
) -> tuple[Score, list[str], list[str]]:
    """The records found for a case beside what its shells recorded."""
    # A line of blanks is no command: bash keeps one in its history (HISTCONTROL
    # is empty in the corpus), we do not.
    name = case.name
    truth = [t for t in history if t.strip()]
    ours = [f.text for f in found if f.kind == LineKind.COMMAND]
    inputs = [(f.program, f.text) for f in found if f.kind == LineKind.INPUT]
    hidden = sum(1 for f in found if f.kind == LineKind.HIDDEN_INPUT)
    a, b = [normalise(t) for t in truth], [normalise(o) for o in ours]
    score = Score(truth=len(a), sessions=1)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(
        a=a, b=b, autojunk=False
    ).get_opcodes():
        if op == "equal":
            score.matched += i2 - i1
        else:
            score.missed += [f"{name}: {t[:SHOWN_CHARS]!r}" for t in truth[i1:i2]]
            score.invented += [f"{name}: {o[:SHOWN_CHARS]!r}" for o in ours[j1:j2]]
    expected = [
        (p.replace("TAG", name), t.replace("TAG", name)) for p, t in case.inputs
    ]
    if inputs != expected:
        score.missed.append(f"{name}: inputs {expected!r}, found {inputs!r}")
    if hidden != case.hidden:
        score.missed.append(f"{name}: {case.hidden} hidden lines, found {hidden}")
    score.exact = int(not score.missed and not score.invented)
    return score, truth, ours


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    groups: dict[str, Score] = defaultdict(Score)
    paths: dict[str, Score] = defaultdict(Score)
    total = Score()
    for case in CASES:
        if not (DATA / f"{case.name}.strace").exists():
            continue
        score, truth, ours = score_case(case)
        for agg in (groups[case.group], paths[case.path], total):
            agg.add(score)
        if args.verbose and (score.missed or score.invented):
            print(f"{case.name}\n  truth: {truth}\n  ours:  {ours}")
    header = f"{'':<12} {'commands':>8} {'exact':>7} {'missed':>7} {'invented':>9}"
    print(f"{header} {'sessions':>9} {'exact':>6}")
    for title, table in (("group", groups), ("path", paths)):
        print(f"-- by {title}")
        for name, s in sorted(table.items()):
            print(row(name, s))
    print(row("all", total))
    for line in total.missed:
        print(f"missed   {line}")
    for line in total.invented:
        print(f"invented {line}")


def row(name: str, s: Score) -> str:
    rate = 100.0 * s.matched / s.truth if s.truth else 100.0
    return (
        f"{name:<12} {s.truth:>8} {rate:>6.1f}% {len(s.missed):>7} "
        f"{len(s.invented):>9} {s.sessions:>9} {s.exact:>6}"
    )


if __name__ == "__main__":
    main()
