"""Coverage: every ssh client on the bastion is on record, traced or not.

Real sshd, ssh in a pty, the agent as a daemon: an ssh without a tag becomes
an `untagged` session record (who, where, its command line), one whose tag was
refused a `refused` record with why, and with `trace_untagged = true` an
untagged ssh is traced under a tag of the agent's own, its commands recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]


def sessions_of(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    result = harness.run_cli(
        "audit-sessions", "--data-dir", str(data_dir), "--format", "json", *args
    )
    assert result.returncode == 0, result.stderr
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records


def record_of(data_dir: Path, ssh_pid: int, *args: str) -> dict[str, Any]:
    (record,) = harness.wait_for(
        lambda: [r for r in sessions_of(data_dir, *args) if r["ssh_pid"] == ssh_pid]
    )
    return record


def test_untagged_and_refused_ssh_are_on_record(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = running_agent.data_dir
    # A remote command with a terminal escape in it: stored text is hostile.
    plain = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-t") + [": '\x1b]0;x\x07'; bash"]
    )
    plain_pid = harness.ssh_pid_of(plain)
    plain.expect(harness.PROMPT)
    refused = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", "SetEnv=AUDIT_SESSION=../x")
    )
    refused_pid = harness.ssh_pid_of(refused)
    refused.expect(harness.PROMPT)

    untagged = record_of(data_dir, plain_pid, "--status", "untagged")
    assert untagged["status"] == "untagged"
    assert untagged["tag"].startswith(f"ut-{plain_pid}-")
    assert untagged["bastion_user"] == "root"
    assert untagged["remote_user"] == user.name
    assert (untagged["host"], untagged["port"]) == ("127.0.0.1", server.port)
    assert untagged["end_reason"] == "no session tag: not traced"
    assert " -F /dev/null -p " in untagged["argv"]
    assert untagged["remote_command"] == ": '\x1b]0;x\x07'; bash"
    assert untagged["command_count"] == 0
    assert not harness.is_traced(plain_pid)

    record = record_of(data_dir, refused_pid, "--status", "refused")
    assert record["end_reason"] == "invalid session tag '../x'"
    assert not harness.is_traced(refused_pid)

    # Both at once, and once each: the agent saw each ssh once.
    both = sessions_of(data_dir, "--status", "untagged,refused")
    assert sorted(r["ssh_pid"] for r in both) == sorted([plain_pid, refused_pid])
    table = harness.run_cli("audit-sessions", "--data-dir", str(data_dir))
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    for child in (plain, refused):
        child.sendeof()
        child.expect(harness.pexpect.EOF)
        child.close()


def test_trace_untagged_records_the_commands(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text("trace_untagged = true\n")
    with harness.agent(data_dir, "--config", str(config)):
        child = harness.spawn_ssh(harness.ssh_argv(user, server))
        ssh_pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
        child.send(b"echo seen-anyway\r")
        child.expect(harness.PROMPT)
        child.sendeof()
        child.expect(harness.pexpect.EOF)
        child.close()
        session = harness.wait_for(
            lambda: record_of(data_dir, ssh_pid, "--status", "closed"), timeout=20
        )
        assert session["tag"].startswith(f"ut-{ssh_pid}-")
        commands = [r["command"] for r in harness.export(data_dir)]
        assert commands == ["echo seen-anyway"]
