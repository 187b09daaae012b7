"""Quarantine copies of session logs: no keystrokes in them, and a bounded size.

A log the agent cannot use (truncated or replaced under it, unreadable
lines, a bad start line) is kept for a person to look at; what was typed,
passwords at remote prompts included, is not (issue 14, finding 10).
"""

from __future__ import annotations

import os
from pathlib import Path

import pexpect
import pytest

from agent.daemon.quarantine import keep, redact_line
from parsers.chunk_log import encode_chunk
from parsers.events import Direction
from tests import harness

SECRET = b"hunter2-never-kept"


def test_keystrokes_are_redacted_and_output_kept() -> None:
    keys = b'1700000000.100000 read(4</dev/pts/3>, "hunter2\\r", 16384) = 8\n'
    assert SECRET not in redact_line(keys.replace(b"hunter2", SECRET))
    assert redact_line(keys) == (
        b'1700000000.100000 read(4</dev/pts/3>, "[redacted]", 16384) = 8\n'
    )
    resumed = b'[pid 42] 1700000000.2 <... read resumed>"pw\\"x", 16384) = 5\n'
    assert redact_line(resumed) == (
        b'[pid 42] 1700000000.2 <... read resumed>"[redacted]", 16384) = 5\n'
    )
    shown = b'1700000000.3 write(5</dev/pts/3>, "hunter2\\r\\n", 9) = 9\n'
    assert redact_line(shown) == shown  # on the screen: output, kept
    typed = encode_chunk(1700000000.4, Direction.INPUT, SECRET + b"\r")
    assert redact_line(typed) == b"1700000000.400000 i [redacted]\n"
    printed = encode_chunk(1700000000.5, Direction.OUTPUT, b"hello\r\n")
    assert redact_line(printed) == printed
    marker = b'#bastion-audit {"event":"detach","time":1.0}\n'
    assert redact_line(marker) == marker


def test_a_copy_is_bounded(tmp_path: Path) -> None:
    log = tmp_path / "big.strace"
    line = b'1700000000.3 write(5</dev/pts/3>, "' + b"x" * 1000 + b'", 1000) = 1000\n'
    with open(log, "wb") as f:
        for _ in range(40_000):  # 40 MB
            f.write(line)
        f.write(b"y" * (9 << 20) + b"\n")  # one line past the line limit
    where = Path(keep(log, tmp_path / "q", move=False))
    size = where.stat().st_size
    assert 0 < size <= (16 << 20) + 4096
    assert where.read_bytes().endswith(b"left out\n")
    assert where.stat().st_mode & 0o777 == 0o600
    assert log.exists()  # a copy: the original is the follower's


@pytest.mark.root
@pytest.mark.slow
def test_a_log_truncated_under_the_agent_is_kept_without_what_was_typed(
    running_agent: harness.AgentProcess,
    user: harness.TestUser,
    server: harness.Sshd,
) -> None:
    data_dir = running_agent.data_dir
    tag = "quarantined-1"
    child = harness.open_tagged(user, server, tag)
    child.send(b"read -s pw; echo got-it\r")
    child.expect(b"read -s pw")
    child.send(SECRET + b"\r")  # one read: the whole secret on one line of the log
    child.expect(b"got-it")
    child.expect(harness.PROMPT)
    log = data_dir / "logs" / f"{tag}.strace"
    assert SECRET in log.read_bytes()  # the raw log holds it, as documented
    harness.wait_for(
        lambda: (
            [c["command"] for c in harness.export(data_dir, "--session", tag)]
            == ["read -s pw; echo got-it"]
        ),
        timeout=20,
    )
    os.truncate(log, log.stat().st_size - 8)  # under the agent: it keeps a copy
    copies = harness.wait_for(
        lambda: list((data_dir / "quarantine").glob(f"{tag}.strace.*")), timeout=30
    )
    kept = copies[0].read_bytes()
    assert b"got-it" in kept  # what the screen showed is kept
    assert SECRET not in kept
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
