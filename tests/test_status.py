"""What `audit-agent status` calls healthy, and how it says so."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from agent.status_file import (
    AgentStatus,
    LiveSession,
    StatusText,
    StraceProcess,
    assess,
    read_status,
    write_status,
)
from tests.harness import run_cli
from tracer.discovery import read_start_ticks


def healthy_status(data_dir: Path) -> AgentStatus:
    """A status as this very process would write it (the pid is alive)."""
    now = time.time()
    return AgentStatus(
        pid=os.getpid(),
        start_ticks=read_start_ticks(os.getpid()) or 0,
        state="running",
        started_at=now - 3600,
        updated_at=now - 1,
        interval_s=2.0,
        data_dir=str(data_dir),
        sessions=(
            LiveSession(
                id="t1",
                tag="t1",
                bastion_user="alice",
                remote_user="bob",
                host="db1",
                port=22,
                started_at=now - 60,
                command_count=3,
                ssh_pid=os.getpid(),
                ssh_alive=True,
                tracer_pid=4321,
                lag_bytes=0,
                recording_bytes=2048,
            ),
        ),
        straces=(StraceProcess(4321, "t1", os.getpid(), adopted=False),),
        store_bytes=10_000,
        shards=1,
        last_flush_at=now - 0.5,
        events={"to": "udp://127.0.0.1:514", "sent": 4, "backlog": 0},
    )


def test_what_is_unhealthy(tmp_path: Path) -> None:
    ok = healthy_status(tmp_path)
    now = time.time()
    assert assess(ok, now) == []
    assert assess(None, now) == [
        "the agent is not running (it never wrote a status here)"
    ]
    cases = [
        (
            dataclasses.replace(ok, state="stopped"),
            "the agent is not running (it stopped",
        ),
        (
            dataclasses.replace(ok, start_ticks=1),
            f"the agent (pid {os.getpid()}) is not",
        ),
        (
            dataclasses.replace(ok, updated_at=now - 60),
            "the agent has not updated its status for 60s",
        ),
        (
            dataclasses.replace(
                ok, sessions=(dataclasses.replace(ok.sessions[0], tracer_pid=0),)
            ),
            f"session t1 (ssh pid {os.getpid()}) is not traced",
        ),
        (dataclasses.replace(ok, store_failing=True, flush_errors=3), "store writes"),
        (dataclasses.replace(ok, ingest_lag_bytes=100 << 20), "100.0 MiB behind"),
        (
            dataclasses.replace(
                ok,
                events={
                    "last_error": "cannot send to tcp://x:514: refused",
                    "last_error_at": "2026-11-28T10:00:01.000Z",
                    "last_ok_at": "2026-11-28T10:00:00.000Z",
                    "backlog": 7,
                },
            ),
            "events are not getting through: cannot send",
        ),
    ]
    for status, problem in cases:
        problems = assess(status, now)
        assert len(problems) == 1 and problem in problems[0], problems
    # A session whose ssh is gone but not yet closed is not a tracing problem.
    gone = dataclasses.replace(ok.sessions[0], tracer_pid=0, ssh_alive=False)
    assert assess(dataclasses.replace(ok, sessions=(gone,)), now) == []


def test_the_status_file_round_trips(tmp_path: Path) -> None:
    status = healthy_status(tmp_path)
    write_status(tmp_path, status)
    assert (tmp_path / "status.json").stat().st_mode & 0o777 == 0o600
    back = read_status(tmp_path)
    assert back is not None
    assert back.sessions[0].id == "t1" and back.straces == status.straces
    assert abs(back.updated_at - status.updated_at) < 0.001


def test_a_heartbeat_rewrites_only_the_time(tmp_path: Path) -> None:
    """The agent keeps the encoded status while nothing in it can have changed
    (agent/daemon/agent.py): each heartbeat is that text with the new time."""
    status = dataclasses.replace(healthy_status(tmp_path), updated_at=1_800_000_000.0)
    text = StatusText(status)
    before = time.time()
    write_status(tmp_path, text)
    back = read_status(tmp_path)
    assert back is not None
    assert before - 0.001 <= back.updated_at <= time.time()
    doc, written = status.to_document(), back.to_document()
    del doc["updated_at"], written["updated_at"]
    assert written == doc


def test_status_cli_exit_codes(tmp_path: Path) -> None:
    missing = run_cli("audit-agent", "status", "--data-dir", str(tmp_path / "nope"))
    assert (missing.returncode, missing.stderr) == (
        2,
        f"audit-agent: error: no such data directory: {tmp_path / 'nope'}\n",
    )
    never = run_cli("audit-agent", "status", "--data-dir", str(tmp_path))
    assert never.returncode == 4
    assert never.stdout.splitlines()[:2] == [
        "UNHEALTHY",
        "  problem: the agent is not running (it never wrote a status here)",
    ]
    write_status(tmp_path, healthy_status(tmp_path))
    ok = run_cli("audit-agent", "status", "--data-dir", str(tmp_path), "--json")
    assert ok.returncode == 0, ok.stdout
    doc = json.loads(ok.stdout)
    assert (doc["healthy"], doc["problems"]) == (True, [])
    assert doc["status"]["sessions"][0]["tracer_pid"] == 4321
    text = run_cli("audit-agent", "status", "--data-dir", str(tmp_path))
    assert text.returncode == 0
    assert text.stdout.splitlines()[0] == "healthy"
    assert "live sessions: 1" in text.stdout
    assert "\tyes (pid 4321)\t" in text.stdout
