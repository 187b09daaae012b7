"""argv-chosen text drives neither the operator's terminal nor a spreadsheet.

Issue 14, finding 8, everything real: a tagged ssh whose remote command holds
ESC, BEL, CR, U+009B and a formula is traced by the agent; that command is the
session's `remote_command` and its command #1; audit-export and audit-sessions
write it as CSV, JSON and JSON Lines.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pexpect
import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

HOSTILE = "sleep 3;: '\r\x1b[2K\x1b]0;x\x07\x9b1A=HYPERLINK(\"http://x.invalid/\")'"
FORMULA = "=cmd|' /C calc'!A0;sleep 3"  # a spreadsheet's DDE formula
# What no output may hold raw: C0 but the newline between records (CSV keeps
# tab and newline in a cell), DEL, C1.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
RAW_JSON = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def run_remote_command(
    agent: harness.AgentProcess,
    user: harness.TestUser,
    server: harness.Sshd,
    tag: str,
    command: str,
) -> None:
    argv = harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    child = harness.spawn_ssh([*argv, command])
    child.expect(pexpect.EOF)
    child.close()
    harness.wait_for(
        lambda: (
            (s := harness.sessions_in(agent.data_dir).get(tag)) and s.status == "closed"
        ),
        timeout=20,
    )


def output(tool: str, data_dir: Path, *args: str) -> str:
    result = harness.run_cli(tool, "--data-dir", str(data_dir), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_hostile_argv_is_escaped_in_every_export(
    running_agent: harness.AgentProcess,
    user: harness.TestUser,
    server: harness.Sshd,
) -> None:
    data_dir = running_agent.data_dir
    run_remote_command(running_agent, user, server, "argv-1", HOSTILE)
    run_remote_command(running_agent, user, server, "argv-2", FORMULA)

    for tag, typed in (("argv-1", HOSTILE), ("argv-2", FORMULA)):
        # JSON and JSON Lines: exact, yet no raw control character.
        for fmt in ("json", "jsonl"):
            text = output("audit-export", data_dir, "--session", tag, "--format", fmt)
            assert not RAW_JSON.search(text), (fmt, text)
            records = (
                json.loads(text)
                if fmt == "json"
                else [json.loads(line) for line in text.splitlines()]
            )
            assert records[0]["command"] == typed
        sessions = output(
            "audit-sessions", data_dir, "--session", tag, "--format", "json"
        )
        assert not RAW_JSON.search(sessions)
        assert json.loads(sessions)[0]["remote_command"] == typed
        lines = output(
            "audit-sessions", data_dir, "--session", tag, "--format", "jsonl"
        )
        assert not RAW_JSON.search(lines)
        # CSV: controls escaped in every cell, formulas defused.
        for tool in ("audit-export", "audit-sessions"):
            rows = csv_rows(output(tool, data_dir, "--session", tag, "--format", "csv"))
            assert rows
            for row in rows:
                for name, cell in row.items():
                    assert not RAW_CONTROL.search(cell), (tool, name, cell)
                    assert cell[:1] not in ("=", "+", "-", "@"), (tool, name, cell)
    (row,) = csv_rows(
        output("audit-export", data_dir, "--session", "argv-1", "--format", "csv")
    )
    assert row["command"] == (
        "sleep 3;: '\\r\\x1b[2K\\x1b]0;x\\x07\\x9b1A=HYPERLINK(\"http://x.invalid/\")'"
    )
    (row,) = csv_rows(
        output("audit-export", data_dir, "--session", "argv-2", "--format", "csv")
    )
    assert row["command"] == "'" + FORMULA
    (row,) = csv_rows(
        output("audit-sessions", data_dir, "--session", "argv-2", "--format", "csv")
    )
    assert row["remote_command"] == "'" + FORMULA
