"""The store never loses or duplicates a command across agent crashes and restarts.

Real sessions, a real agent killed with SIGKILL at random moments and started
again on the same data directory, and logs damaged under the running agent.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

SESSIONS = 5
KILLS = 20


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_agent_left() -> Iterator[None]:
    """Stop what a failing test left: its agent would trace the next tests' ssh."""
    yield
    while _STARTED:
        stop_agent(_STARTED.pop())


def start_agent(data_dir: Path) -> subprocess.Popen[bytes]:
    log = open(data_dir.parent / "agent.log", "ab")  # noqa: SIM115 (the child keeps it)
    with log:
        process = subprocess.Popen(
            [
                str(harness.BIN / "audit-agent"),
                "run",
                "--data-dir",
                str(data_dir),
                "--poll-interval",
                "0.05",
                "--scope-pid",  # this run's sessions only (see harness.agent)
                str(os.getpid()),
                "--config",  # defaults, never the machine's agent.toml
                "/dev/null",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _STARTED.append(process)
    return process


def stop_agent(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(20)


def open_session(user: harness.TestUser, server: harness.Sshd, tag: str):
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    )
    pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
    return child


def stored(data_dir: Path, tag: str) -> list[tuple[int, str]]:
    return [
        (r["seq"], r["command"]) for r in harness.export(data_dir, "--session", tag)
    ]


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    seed = int(os.environ.get("RESTART_TEST_SEED", time.time()))
    rng = random.Random(seed)
    agent = start_agent(data_dir)
    harness.wait_for(lambda: (data_dir / "logs").is_dir(), timeout=15)
    tags = [f"crash{i}" for i in range(SESSIONS)]
    children = [open_session(user, server, tag) for tag in tags]
    typed: dict[str, list[str]] = {tag: [] for tag in tags}

    kills_done = threading.Event()
    current = {"agent": agent}

    def killer() -> None:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.8))
            current["agent"].send_signal(signal.SIGKILL)
            current["agent"].wait()
            current["agent"] = start_agent(data_dir)
        kills_done.set()

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        n = 0
        while not kills_done.is_set() or n < 10:
            for tag, child in zip(tags, children, strict=True):
                command = f"echo {tag}-{n}"
                child.send(command.encode() + b"\r")
                child.expect(f"{tag}-{n}\r\n".encode())
                child.expect(harness.PROMPT)
                typed[tag].append(command)
            n += 1
        thread.join()
        for child in children:
            child.sendeof()
            child.expect(harness.pexpect.EOF)
            child.close()
        for tag in tags:
            expected = list(enumerate(typed[tag], start=1))
            harness.wait_for(
                lambda t=tag, e=expected: stored(data_dir, t) == e, timeout=60
            )
        sessions = harness.sessions_in(data_dir)
        harness.wait_for(
            lambda: all(
                harness.sessions_in(data_dir)[t].status == "closed" for t in tags
            ),
            timeout=30,
        )
        sessions = harness.sessions_in(data_dir)
        assert sorted(sessions) == sorted(tags), f"seed {seed}"
        for tag in tags:
            assert stored(data_dir, tag) == list(enumerate(typed[tag], start=1)), (
                f"seed {seed}"
            )
            # SIGKILL leaves the straces running; the next agent adopts them: no gap.
            assert sessions[tag].gaps == (), f"seed {seed}"
        # 20 kills, and one chain: no fork, no link twice, nothing unexplained.
        verified = harness.run_cli(
            "audit-export", "--data-dir", str(data_dir), "--verify"
        )
        assert verified.returncode == 0, f"seed {seed}: {verified.stdout}"
    finally:
        thread.join()
        stop_agent(current["agent"])


def test_graceful_restart_marks_the_gap_and_goes_on(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    agent = start_agent(data_dir)
    harness.wait_for(lambda: (data_dir / "logs").is_dir(), timeout=15)
    child = open_session(user, server, "graceful")
    try:
        child.send(b"echo before\r")
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: stored(data_dir, "graceful") == [(1, "echo before")])
        stop_agent(agent)  # its strace detaches; the session goes on untraced
        pid = harness.ssh_pid_of(child)
        assert not harness.is_traced(pid)
        agent = start_agent(data_dir)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"echo after\r")
        child.expect(harness.PROMPT)
        harness.wait_for(
            lambda: (
                stored(data_dir, "graceful") == [(1, "echo before"), (2, "echo after")]
            )
        )
        gaps = harness.sessions_in(data_dir)["graceful"].gaps
        assert len(gaps) == 1, gaps
        (gap,) = gaps
        assert gap[0] < gap[1]
    finally:
        child.sendeof()
        child.close()
        stop_agent(agent)


def test_session_that_ended_while_the_agent_was_down_is_closed_on_restart(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    agent = start_agent(data_dir)
    harness.wait_for(lambda: (data_dir / "logs").is_dir(), timeout=15)
    child = open_session(user, server, "downtime")
    child.send(b"echo seen\r")
    child.expect(harness.PROMPT)
    agent.send_signal(signal.SIGKILL)  # its strace keeps recording
    agent.wait()
    child.send(b"echo while-down\r")
    child.expect(harness.PROMPT)
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()
    agent = start_agent(data_dir)
    try:
        harness.wait_for(
            lambda: (
                harness.sessions_in(data_dir).get("downtime")
                and harness.sessions_in(data_dir)["downtime"].status == "closed"
            ),
            timeout=20,
        )
        assert stored(data_dir, "downtime") == [
            (1, "echo seen"),
            (2, "echo while-down"),
        ]
        harness.wait_for(lambda: not list((data_dir / "logs").iterdir()), timeout=10)
    finally:
        stop_agent(agent)


def test_damaged_logs_are_quarantined_and_recording_goes_on(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    logs = data_dir / "logs"
    agent = start_agent(data_dir)
    harness.wait_for(lambda: logs.is_dir(), timeout=15)
    quarantine = data_dir / "quarantine"
    try:
        # A log that is not a session log at all.
        (logs / "garbage.strace").write_bytes(b"\x00\xff" * 1000 + b"\n")
        harness.wait_for(
            lambda: (
                quarantine.is_dir()
                and any(
                    p.name.startswith("garbage.strace") for p in quarantine.iterdir()
                )
            ),
            timeout=10,
        )
        assert not (logs / "garbage.strace").exists()

        # A live session's log truncated under the agent.
        child = open_session(user, server, "truncated")
        child.send(b"echo kept\r")
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: stored(data_dir, "truncated") == [(1, "echo kept")])
        os.truncate(logs / "truncated.strace", 0)
        time.sleep(0.3)
        # Binary junk in the log (root could do this; so could a broken disk).
        with open(logs / "truncated.strace", "ab") as f:
            f.write(b"\x00\x01junk\xff\n")
        child.send(b"echo after-truncation\r")
        child.expect(harness.PROMPT)
        harness.wait_for(
            lambda: (
                [c for _, c in stored(data_dir, "truncated")][-1:]
                == ["echo after-truncation"]
            ),
            timeout=20,
        )
        assert stored(data_dir, "truncated")[0] == (1, "echo kept")  # nothing lost
        session = harness.sessions_in(data_dir)["truncated"]
        assert len(session.gaps) == 1
        text = (data_dir.parent / "agent.log").read_text()
        assert "was truncated under the agent" in text

        # Recording of new sessions goes on.
        other = open_session(user, server, "afterwards")
        other.send(b"echo still-recording\r")
        other.expect(harness.PROMPT)
        harness.wait_for(
            lambda: stored(data_dir, "afterwards") == [(1, "echo still-recording")]
        )
        for c in (child, other):
            c.sendeof()
            c.expect(harness.pexpect.EOF)
            c.close()
        harness.wait_for(
            lambda: harness.sessions_in(data_dir)["truncated"].status == "closed",
            timeout=20,
        )
        harness.wait_for(
            lambda: "unreadable lines" in (data_dir.parent / "agent.log").read_text(),
            timeout=10,
        )
        copies = [p.name for p in quarantine.iterdir()]
        assert sum(name.startswith("truncated.strace") for name in copies) == 2
        for path in quarantine.iterdir():
            assert path.stat().st_mode & 0o777 in (0o600,), path
    finally:
        stop_agent(agent)
