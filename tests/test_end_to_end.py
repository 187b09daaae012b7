"""A tagged ssh session through a real sshd, traced by the running agent.

Real components only: sshd on 127.0.0.1, bash as the remote shell, ssh in a
pty driven like a person at a keyboard, the agent as a daemon process with
strace, the store on disk, audit-export and audit-tail as subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

COMMAND_DEADLINE_S = 20.0  # generous: speed belongs to the benchmarks


def commands_of(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def wait_for_commands(data_dir: Path, tag: str, expected: list[str]) -> list[dict]:
    harness.wait_for(
        lambda: commands_of(data_dir, tag) == expected, timeout=COMMAND_DEADLINE_S
    )
    return harness.export(data_dir, "--session", tag)


def open_session(user: harness.TestUser, server: harness.Sshd, tag: str, *options: str):
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}", *options)
    )
    ssh_pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
    return child, ssh_pid


def test_typed_edited_completed_and_recalled_commands(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = running_agent.data_dir
    target = user.home / "audit_completion_target.txt"
    target.write_text("hello\n")
    tag = "e2e-basic"
    child, ssh_pid = open_session(user, server, tag)

    child.send(b"echo one\r")
    child.expect(harness.PROMPT)
    wait_for_commands(data_dir, tag, ["echo one"])

    child.send(b"echo twoo\x7f\x7fo\r")  # two backspaces: "echo two"
    child.expect(harness.PROMPT)
    wait_for_commands(data_dir, tag, ["echo one", "echo two"])

    child.send(b"cat audit_comp\t")  # bash completes the unique file name
    child.expect(b"target.txt")
    child.send(b"\r")
    child.expect(b"hello")
    child.expect(harness.PROMPT)
    child.send(b"\x1b[A")  # up arrow: the previous command again
    child.expect(b"target.txt")
    child.send(b"\r")
    child.expect(b"hello")
    child.expect(harness.PROMPT)
    expected = ["echo one", "echo two"] + ["cat audit_completion_target.txt"] * 2
    records = wait_for_commands(data_dir, tag, expected)

    # Still open: the session is live and its strace is running.
    assert harness.sessions_in(data_dir)[tag].status == "live"
    assert harness.strace_processes_for(ssh_pid)
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert record["session"] == tag
        assert record["bastion_user"] == "root"
        assert record["remote_user"] == user.name
        assert record["host"] == "127.0.0.1"
        assert record["port"] == server.port
        assert record["time"].endswith("Z")

    child.sendeof()  # Ctrl-D: leaves bash without typing a command
    child.expect(harness.pexpect.EOF)
    child.close()
    session = harness.wait_for(
        lambda: (s := harness.sessions_in(data_dir)[tag]).status == "closed" and s,
        timeout=20,
    )
    assert session.ended_at is not None and session.ended_at >= session.started_at
    assert commands_of(data_dir, tag) == expected
    harness.wait_for(lambda: not harness.strace_processes_for(ssh_pid), timeout=10)
    # Fully ingested and closed: the raw log (it holds every keystroke) is gone.
    harness.wait_for(lambda: not list((data_dir / "logs").iterdir()), timeout=10)


@pytest.mark.parametrize(
    "bad_tag",
    ["../../etc/x", "a;rm -rf /", "t" * 200],
    ids=["traversal", "shell", "long"],
)
def test_invalid_tag_is_not_traced(
    running_agent: harness.AgentProcess,
    user: harness.TestUser,
    server: harness.Sshd,
    bad_tag: str,
) -> None:
    data_dir = running_agent.data_dir
    before = set(Path("/etc").iterdir())
    # Quoted, so that ssh itself accepts the value and runs the session.
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f'SetEnv AUDIT_SESSION="{bad_tag}"')
    )
    ssh_pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    child.send(b"echo untraced\r")
    child.expect(harness.PROMPT)
    harness.wait_for(
        lambda: "invalid session tag" in running_agent.log_text(), timeout=10
    )
    assert not harness.is_traced(ssh_pid)
    assert not harness.strace_processes_for(ssh_pid)
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()
    assert list((data_dir / "logs").iterdir()) == []
    names = {p.name for p in data_dir.iterdir()}
    assert (
        {"logs", "store", "chain"}
        <= names
        <= {
            "logs",
            "store",
            "chain",
            "status.json",
            "control.sock",
            "agent.lock",  # one agent per data directory
        }
    )
    assert set(Path("/etc").iterdir()) == before
    assert harness.export(data_dir) == []  # no command
    assert running_agent.log_text().count("invalid session tag") == 1
    # But the ssh is on record, refused, with why (the coverage of issue 17).
    (refused,) = harness.wait_for(
        lambda: [
            s for s in harness.sessions_in(data_dir).values() if s.ssh_pid == ssh_pid
        ]
    )
    assert refused.status == "refused"
    assert refused.end_reason.startswith("invalid session tag ")
    assert refused.host == "127.0.0.1" and refused.remote_user == user.name


def test_password_typed_to_sshpass_never_reaches_data_dir(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    """ssh reads its password from /dev/tty, which the strace -P filter leaves out."""
    data_dir = running_agent.data_dir
    tag = "e2e-sshpass"
    argv = [
        "-e",
        "ssh",
        *harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}", key=False),
    ]
    child = harness.spawn_ssh(argv, program="sshpass", env={"SSHPASS": user.password})
    ssh_pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
    child.send(b"echo via-sshpass\r")
    child.expect(harness.PROMPT)
    wait_for_commands(data_dir, tag, ["echo via-sshpass"])
    secret = user.password.encode()
    live = [p for p in data_dir.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert live == []  # not even in the raw log of the live session
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()
    harness.wait_for(
        lambda: harness.sessions_in(data_dir)[tag].status == "closed", timeout=20
    )
    assert [
        p for p in data_dir.rglob("*") if p.is_file() and secret in p.read_bytes()
    ] == []


def test_permissions_of_logs_and_store(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = running_agent.data_dir
    tag = "e2e-perms"
    child, _ = open_session(user, server, tag)
    child.send(b"echo perms\r")
    child.expect(harness.PROMPT)
    wait_for_commands(data_dir, tag, ["echo perms"])
    (log,) = list((data_dir / "logs").iterdir())
    assert log.name == f"{tag}.strace"
    for path, mode in [
        (data_dir, 0o700),
        (data_dir / "logs", 0o700),
        (data_dir / "store", 0o700),
        (log, 0o600),
        *[(p, 0o600) for p in (data_dir / "store").iterdir()],
    ]:
        st = os.stat(path)
        assert (st.st_mode & 0o777, st.st_uid) == (mode, 0), path
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()


def test_audit_tail_follows_a_live_session(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = running_agent.data_dir
    tail = subprocess.Popen(
        [str(harness.BIN / "audit-tail"), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tag = "e2e-tail"
        child, _ = open_session(user, server, tag)
        child.send(b"echo followed\r")
        child.expect(harness.PROMPT)
        line = harness.LineReader(tail.stdout).readline(timeout=COMMAND_DEADLINE_S)
        fields = line.rstrip("\n").split("\t")
        assert fields[2:] == [  # after the time and the bastion
            f"root → {user.name}@127.0.0.1:{server.port}",
            tag,
            "-",  # no risk rule matched
            "echo followed",
        ]
        child.sendeof()
        child.expect(harness.pexpect.EOF)
        child.close()
    finally:
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=10)
    assert tail.returncode == 0
    assert "Traceback" not in err
