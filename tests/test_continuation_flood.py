"""One user's endless open command does not stall another's (issue 16, finding 1).

On main before the fix, `echo "` followed by 300 continuation lines in one
session delayed another session's `echo PING` reaching the store by 49.5 s:
the assembler re-lexed every held line at each new one, in the one ingest
thread. Now each line is lexed once (parsers/shell_syntax.Lexer). Real sshd,
bash, ssh in a pty, the agent tracing both sessions; the bound is generous
(speed belongs to the benchmarks), the failure it guards against is not.
"""

from __future__ import annotations

import time

import pytest

from tests import harness
from tests.test_end_to_end import COMMAND_DEADLINE_S, commands_of, open_session

pytestmark = [pytest.mark.root, pytest.mark.slow]

LINES = 300


def test_an_open_quote_of_300_lines_does_not_hold_up_another_session(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = running_agent.data_dir
    flood, _ = open_session(user, server, "flood")
    victim, _ = open_session(user, server, "victim")
    flood.send(b'echo "open\r')
    flood.expect(rb"> ")
    for n in range(LINES):
        flood.send(b"continuation line %d of the open quote\r" % n)
        flood.expect(rb"> ")
    victim.send(b"echo PING\r")
    victim.expect(b"PING")
    sent = time.monotonic()
    harness.wait_for(
        lambda: commands_of(data_dir, "victim") == ["echo PING"],
        timeout=COMMAND_DEADLINE_S,
    )
    assert time.monotonic() - sent < COMMAND_DEADLINE_S
    flood.send(b'closed"\r')
    flood.expect(harness.PROMPT)
    harness.wait_for(lambda: commands_of(data_dir, "flood"), timeout=COMMAND_DEADLINE_S)
    (command,) = commands_of(data_dir, "flood")
    assert command.count("\n") == LINES + 1 and command.endswith('closed"')
    flood.close(force=True)
    victim.close(force=True)
