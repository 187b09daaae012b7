"""The parser on the fidelity corpus: every command the shell recorded, nothing else.

bench/corpus/data holds real sessions captured by bench/corpus/capture.py:
bash with readline's markers (line editing, completion, history, long and
multi-line commands, pastes, Ctrl-C, full-screen programs, prompts, secrets,
UTF-8, nested shells), the same cases with the markers off (the fallback
path), sessions in dash, busybox sh, bash --noediting, zsh and fish and back,
program inputs (python3, sqlite3, bc, read) and output that tries to hide or
forge a command, with what the shells recorded beside each. This test
replays them through the parser; tests/test_fidelity.py plays them live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.accuracy import score_case
from bench.corpus.cases import CASES
from parsers.pipeline import commands_from_log

DATA = Path(__file__).resolve().parents[1] / "bench" / "corpus" / "data"
CAPTURED = [c for c in CASES if (DATA / f"{c.name}.strace").exists()]


def test_the_corpus_covers_the_cases() -> None:
    assert len(CAPTURED) == len(CASES) >= 170


@pytest.mark.parametrize("case", CAPTURED, ids=[c.name for c in CAPTURED])
def test_commands_match_the_shells_history(case) -> None:
    score, truth, ours = score_case(case)
    assert not score.missed and not score.invented, (truth, ours)


def test_secrets_never_become_commands() -> None:
    for case in CAPTURED:
        if case.group != "secrets":
            continue
        for command in commands_from_log((DATA / f"{case.name}.strace").read_bytes()):
            assert "not-the-password" not in command.text
