"""The parser on the fidelity corpus: every command bash recorded, nothing else.

bench/corpus/data holds real sessions captured by bench/corpus/capture.py
(76 sessions: line editing, completion, history, long and multi-line
commands, pastes, Ctrl-C, full-screen programs, prompts, secrets, UTF-8,
nested shells) with what the remote bash recorded beside each. This test
replays them through the parser; tests/test_fidelity.py plays them live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.corpus.cases import CASES
from bench.corpus.runner import normalise
from parsers.pipeline import commands_from_log

DATA = Path(__file__).resolve().parents[1] / "bench" / "corpus" / "data"
CAPTURED = [c for c in CASES if (DATA / f"{c.name}.strace").exists()]


def test_the_corpus_covers_the_cases() -> None:
    assert len(CAPTURED) == len(CASES) >= 60


@pytest.mark.parametrize("case", CAPTURED, ids=[c.name for c in CAPTURED])
def test_commands_match_bash_history(case) -> None:
    truth = json.loads((DATA / f"{case.name}.truth.json").read_text())
    ours = commands_from_log((DATA / f"{case.name}.strace").read_bytes())
    assert [normalise(c.text) for c in ours] == [
        normalise(t) for t in truth if t.strip()
    ]


def test_secrets_never_become_commands() -> None:
    for case in CAPTURED:
        if case.group != "secrets":
            continue
        for command in commands_from_log((DATA / f"{case.name}.strace").read_bytes()):
            assert "not-the-password" not in command.text
