"""Filters that match nothing say so, and contradictory time bounds are refused.

`--session`, `--user` or `--host` naming no session of the store is a typo
more often than an empty answer: audit-export, audit-sessions and audit-tail
(before it waits) say `no session '…'` on stderr with exit status 1, as
`--cast` and audit-replay already did. `--since` after `--until` is bad usage.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.harness import BIN, LineReader, run_cli
from tests.test_operator_cli import seed

TOOLS = ("audit-export", "audit-sessions", "audit-tail")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """s1 (alice → bob@db1), s2 (carol → bob@db2), s3 (no commands)."""
    data_dir = tmp_path_factory.mktemp("filters")
    seed(data_dir)
    return data_dir


def tool(name: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The tool as an operator runs it; audit-tail would wait: 10 s at most."""
    return subprocess.run(
        [str(BIN / name), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=10,
    )


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--session", "ticket-9"], "no session 'ticket-9'"),
        (["--user", "mallory"], "no session of user 'mallory'"),
        (["--host", "db9"], "no session to host 'db9'"),
        (
            ["--user", "carol", "--host", "db1"],
            "no session of user 'carol' to host 'db1'",
        ),
        (["--session", "s1", "--user", "carol"], "no session 's1' of user 'carol'"),
    ],
)
def test_a_filter_that_names_no_session_says_so(
    seeded: Path, name: str, args: list[str], message: str
) -> None:
    result = tool(name, seeded, *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{name}: error: {message}\n"


@pytest.mark.parametrize("name", TOOLS)
def test_a_filter_that_names_a_session_still_works(seeded: Path, name: str) -> None:
    extra = ["--no-follow"] if name == "audit-tail" else []
    for args in (["--session", "s3"], ["--user", "bob"], ["--host", "db2"]):
        result = tool(name, seeded, *args, *extra)
        assert result.returncode == 0, (args, result.stderr)
    # A session without commands: no commands is an answer, not an error.
    assert tool("audit-export", seeded, "--session", "s3").stdout == "[]\n"


def test_a_time_window_that_cannot_hold_anything_is_bad_usage(seeded: Path) -> None:
    for name in ("audit-export", "audit-sessions"):
        result = tool(name, seeded, "--since", "1h", "--until", "2h")
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(f"{name}: error: --since 1h (")
        assert "is after --until 2h (" in result.stderr
        fine = tool(name, seeded, "--since", "2h", "--until", "1h")
        assert fine.returncode == 0, fine.stderr


def test_an_empty_window_is_still_an_empty_answer(seeded: Path) -> None:
    result = run_cli(
        "audit-export",
        "--data-dir",
        str(seeded),
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2000-01-02T00:00:00Z",
    )
    assert (result.returncode, result.stdout) == (0, "[]\n")


def test_tail_waits_for_a_session_to_come_only_when_asked(seeded: Path) -> None:
    tail = subprocess.Popen(
        [str(BIN / "audit-tail"), "--data-dir", str(seeded), "--session", "later"]
        + ["--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = LineReader(tail.stderr).readline(timeout=10)
        assert line == "audit-tail: no session 'later' yet: waiting for it\n"
        assert tail.poll() is None  # still waiting
    finally:
        tail.send_signal(signal.SIGINT)
        tail.wait(10)
    assert tail.returncode == 0
    once = tool("audit-tail", seeded, "--session", "later", "--wait", "--no-follow")
    assert once.returncode == 1 and "no session 'later'" in once.stderr
