"""Every corpus case as a live session, against what the remote bash recorded.

Real sshd, real bash, real ssh in a pty, the agent tracing with strace; the
ground truth is each shell's own history (bench/corpus/runner.py). After the
sessions end, no secret typed in them is anywhere under the data directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.corpus.cases import CASES
from bench.corpus.runner import WRONG_PASSWORD, environment, normalise, run_cases
from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_all_cases_live_match_bash_history(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    workdir.chmod(0o755)
    data_dir = tmp_path / "data"
    with environment(workdir) as (server, users), harness.agent(data_dir) as agent:
        truths = run_cases(list(CASES), users, server, parallel=3)

        def open_sessions() -> list[str]:
            stored = harness.sessions_in(data_dir)
            return [
                c.name
                for c in CASES
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
    for case in CASES:
        ours = [normalise(r["command"]) for r in records if r["session"] == case.name]
        truth = [normalise(t) for t in truths[case.name] if t.strip()]
        if ours != truth:
            mismatches.append(f"{case.name}:\n  bash: {truth}\n  ours: {ours}")
    assert not mismatches, "\n".join(mismatches)

    harness.wait_for(lambda: not list((data_dir / "logs").iterdir()), timeout=20)
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in content, f"a secret is in {path}"
