"""Ingest on real files: logs written the way session_tracker.sh writes them."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from agent.daemon.ingest import Ingest
from agent.daemon.store import Store
from agent.reader import load
from tests.harness import wait_for

DATA = Path(__file__).parent / "data"


def start_line(tag: str, pid: int = 4242) -> bytes:
    argv = base64.b64encode(b"ssh\0-p\0002200\0bob@db1\0").decode()
    fields = {
        "event": "start",
        "v": 1,
        "time": 1.0,
        "tag": tag,
        "ssh_pid": pid,
        "start_ticks": 77,
        "started_at": 1_800_000_000.0,
        "uid": 1000,
        "user": "alice",
        "tty": "/dev/pts/0",
        "argv_b64": argv,
    }
    return b"#bastion-audit " + json.dumps(fields).encode() + b"\n"


@pytest.fixture
def pipeline(tmp_path: Path):
    data_dir = tmp_path / "data"
    store = Store(data_dir / "store", 0.05)
    ingest = Ingest(data_dir / "logs", store, retention_s=0.0)
    store.on_flushed = ingest.on_flushed
    store.open()
    store.start()
    ingest.start()
    yield data_dir, ingest
    ingest.stop()
    store.stop()


def commands(data_dir: Path) -> list[str]:
    return [c.command for c in load(data_dir).commands]


def test_a_log_is_followed_as_it_grows_and_removed_when_closed(pipeline) -> None:
    data_dir, _ = pipeline
    body = (DATA / "bash_basic.strace").read_bytes()
    log = data_dir / "logs" / "grow.strace"
    with open(log, "wb") as f:
        f.write(start_line("grow"))
        cut = body.index(b"echo twoo")
        f.write(body[:cut])  # up to a half-written line
        f.flush()
        wait_for(lambda: commands(data_dir) == ["echo one"])
        f.write(body[cut:])
    wait_for(lambda: len(commands(data_dir)) == 6)
    wait_for(lambda: not log.exists())
    session = load(data_dir).sessions["grow"]
    assert (session.status, session.bastion_user, session.port) == (
        "closed",
        "alice",
        2200,
    )


def test_a_log_replaced_under_the_agent_is_kept_and_marked(pipeline) -> None:
    data_dir, _ = pipeline
    body = (DATA / "bash_basic.strace").read_bytes()
    log = data_dir / "logs" / "swap.strace"
    first, rest = (
        body[: body.index(b"1795863299.458034")],
        body[body.index(b"1795863299.458034") :],
    )
    log.write_bytes(start_line("swap") + first)
    wait_for(lambda: commands(data_dir) == ["echo one", "echo to", "ls /etc/passwd"])
    replacement = log.with_name("swap.new")
    replacement.write_bytes(b"#something else entirely\n")
    os.replace(replacement, log)  # a new inode under the same name
    time.sleep(0.5)
    with open(log, "ab") as f:
        f.write(rest)
    wait_for(lambda: load(data_dir).sessions["swap"].status == "closed", timeout=10)
    session = load(data_dir).sessions["swap"]
    assert commands(data_dir)[:3] == ["echo one", "echo to", "ls /etc/passwd"]
    assert len(session.gaps) == 1
    quarantined = list((data_dir / "quarantine").iterdir())
    assert (
        len(quarantined) == 1
        and quarantined[0].read_bytes() == b"#something else entirely\n"
    )


def test_a_log_without_a_start_line_is_moved_aside(pipeline) -> None:
    data_dir, _ = pipeline
    log = data_dir / "logs" / "nostart.strace"
    log.write_bytes((DATA / "bash_basic.strace").read_bytes())
    wait_for(lambda: not log.exists(), timeout=10)
    (moved,) = (data_dir / "quarantine").iterdir()
    assert (
        moved.name.startswith("nostart.strace")
        and moved.stat().st_mode & 0o777 == 0o600
    )
    assert commands(data_dir) == []


def test_retention_keeps_closed_logs_for_a_while(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = Store(data_dir / "store", 0.05)
    ingest = Ingest(data_dir / "logs", store, retention_s=1.5)
    store.on_flushed = ingest.on_flushed
    store.open()
    store.start()
    ingest.start()
    try:
        log = data_dir / "logs" / "kept.strace"
        body = (DATA / "bash_basic.strace").read_bytes()
        # Its session ended "now", so retention counts from here.
        now_end = f"{time.time():.6f} +++ exited with 0 +++\n".encode()
        log.write_bytes(
            start_line("kept")
            + body.replace(b"1795863299.919873 +++ exited with 0 +++", b"")
            + now_end
        )
        wait_for(
            lambda: (
                load(data_dir).sessions.get("kept")
                and load(data_dir).sessions["kept"].status == "closed"
            )
        )
        time.sleep(0.5)
        assert log.exists()
        wait_for(lambda: not log.exists(), timeout=10)
    finally:
        ingest.stop()
        store.stop()
