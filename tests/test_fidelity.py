"""Every corpus case as a live session, against what the remote shells recorded.

Real sshd, real bash (and dash, zsh, fish, python3, sqlite3 in it), real ssh
in a pty, the agent tracing with strace; the ground truth is each shell's own
history, or the case's list where the shell keeps none (bench/corpus/
runner.py). The records are compared as bench.accuracy compares the parser's:
commands with the history, program inputs and hidden lines with the case.
After the sessions end, no secret typed in them is anywhere under the data
directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.accuracy import Found, compare
from bench.corpus.cases import CASES, Case
from bench.corpus.runner import WRONG_PASSWORD, environment, run_cases
from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_all_cases_live_match_the_shells_history(tmp_path: Path) -> None:
    play(tmp_path, list(CASES))


def play(tmp_path: Path, cases: list[Case]) -> None:
    """The cases live through the agent; every record right, no secret kept."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    workdir.chmod(0o755)
    data_dir = tmp_path / "data"
    with environment(workdir) as (server, users), harness.agent(data_dir) as agent:
        truths = run_cases(cases, users, server, parallel=3)

        def open_sessions() -> list[str]:
            stored = harness.sessions_in(data_dir)
            return [
                c.name
                for c in cases
                if c.name not in stored or stored[c.name].status != "closed"
            ]

        try:
            harness.wait_for(lambda: not open_sessions(), timeout=60)
        except TimeoutError:
            pytest.fail(
                f"sessions not closed: {open_sessions()}\n{agent.log_text()[-4000:]}"
            )
        records = harness.export(data_dir)
        secrets = [users.main.password, users.other.password, WRONG_PASSWORD]

    mismatches = []
    for case in cases:
        found = [
            Found(r["kind"], r["command"], r["program"])
            for r in records
            if r["session"] == case.name
        ]
        score, truth, ours = compare(case, truths[case.name], found)
        if score.missed or score.invented:
            mismatches.append(
                f"{case.name}:\n  truth: {truth}\n  ours:  {ours}\n"
                f"  missed: {score.missed}\n  invented: {score.invented}"
            )
    assert not mismatches, "\n".join(mismatches)

    harness.wait_for(lambda: not list((data_dir / "logs").iterdir()), timeout=20)
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in content, f"a secret is in {path}"
