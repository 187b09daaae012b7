"""The parser fails safe, end to end (issue 14, findings 3, 4 and 5).

Each attack is printed by a real command in a real bash over a traced ssh
(real sshd, real ssh in a pty, the agent's strace), as the issue reproduced
it: the alternate screen left on, an unterminated OSC and DCS, zero-width
characters in a command, a printed prompt and command in readline's markers,
a command whose first output line could pass for its history expansion
under `set +H`. Every command must be in the store exactly as bash's own
history has it, nothing invented (the corpus cases of group "failsafe",
tests/test_fidelity.play), and no session may carry unparsed input.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.corpus.cases import CASES
from tests import harness
from tests.test_fidelity import play

pytestmark = [pytest.mark.root, pytest.mark.slow]

ATTACKS = [c for c in CASES if c.group == "failsafe"]


def test_printed_sequences_neither_silence_nor_forge_commands(tmp_path: Path) -> None:
    assert len(ATTACKS) >= 5
    play(tmp_path, ATTACKS)
    sessions = harness.sessions_in(tmp_path / "data")
    for case in ATTACKS:
        assert sessions[case.name].unparsed_input is None, case.name
