"""The agent reading paramiko recordings from the spool: what it trusts.

Real files, a real Store and Ingest; the spool must be root's, so these run
as root.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon.ingest import Ingest
from agent.daemon.store import Store
from agent.reader import load
from parsers.chunk_log import encode_chunk, encode_transfer
from parsers.events import Chunk, Transfer, TransferDirection, TransferOutcome
from parsers.strace_lines import MARKER_PREFIX, decode_log
from tests.harness import wait_for
from tests.test_ingest import start_line
from tracer.discovery import read_start_ticks
from tracer.session_log import SessionLogError, SessionStart

pytestmark = pytest.mark.root
DATA = Path(__file__).parent / "data"


def recording(tag: str, uid: int = 0, user: str = "mallory") -> bytes:
    """A paramiko recording of the bash_basic session, start line to end line."""
    pid = os.getpid()
    argv = base64.b64encode(b"ssh\0-t\0-p\0002200\0-l\0bob\0--\0db1").decode()
    start = {
        "event": "start",
        "time": 1.0,
        "tag": tag,
        "ssh_pid": pid,
        "start_ticks": read_start_ticks(pid),
        "started_at": 1_700_000_000.0,
        "uid": uid,
        "user": user,  # never believed: the file's owner names the user
        "tty": "/dev/pts/0",
        "argv_b64": argv,
        "rows": 24,
        "cols": 80,
        "recorder": "paramiko",
    }
    out = [MARKER_PREFIX + json.dumps(start).encode() + b"\n"]
    events = decode_log((DATA / "bash_basic.strace").read_bytes(), tty="/dev/pts/0")
    for e in events:
        if isinstance(e, Chunk):
            out.append(encode_chunk(e.time, e.direction, e.data))
    out.append(MARKER_PREFIX + b'{"event":"end","time":1700000100,"reason":"x"}\n')
    return b"".join(out)


@pytest.fixture
def spooled(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    data_dir = tmp_path / "data"
    spool = tmp_path / "recordings"
    spool.mkdir(mode=0o1733)
    spool.chmod(0o1733)
    store = Store(data_dir / "store", 0.05)
    ingest = Ingest(data_dir / "logs", store, recordings_dir=spool)
    store.on_flushed = ingest.on_flushed
    store.open()
    store.start()
    ingest.start()
    yield data_dir, spool
    ingest.stop()
    store.stop()


def test_a_recording_is_stored_as_the_file_owners_paramiko_session(
    spooled: tuple[Path, Path],
) -> None:
    data_dir, spool = spooled
    (spool / "rec1.chunks").write_bytes(recording("rec1"))
    session = wait_for(
        lambda: (
            (s := load(data_dir).sessions.get("rec1")) and s.status == "closed" and s
        )
    )
    assert session.recorder == "paramiko"
    assert session.bastion_user == "root"  # the owner, not "mallory"
    assert (session.remote_user, session.host, session.port) == ("bob", "db1", 2200)
    assert [c.command for c in load(data_dir).commands]
    wait_for(lambda: not (spool / "rec1.chunks").exists())  # removed once stored


def test_a_recording_whose_owner_is_not_its_uid_is_quarantined(
    spooled: tuple[Path, Path],
) -> None:
    data_dir, spool = spooled
    path = spool / "rec2.chunks"
    # Written and chowned under another name first: the ingest must never see
    # it as root's own file, even for an instant.
    draft = spool / "rec2.draft"
    draft.write_bytes(recording("rec2", uid=0))
    os.chown(draft, 1000, -1)  # another user's file claiming root's session
    draft.rename(path)
    wait_for(lambda: not path.exists())
    assert list((data_dir / "quarantine").glob("rec2.chunks.*"))
    assert "rec2" not in load(data_dir).sessions


def test_a_symlink_in_the_spool_is_never_followed(
    spooled: tuple[Path, Path], tmp_path: Path
) -> None:
    data_dir, spool = spooled
    target = tmp_path / "elsewhere.chunks"
    target.write_bytes(recording("rec3"))
    (spool / "rec3.chunks").symlink_to(target)
    wait_for(lambda: not (spool / "rec3.chunks").is_symlink())
    moved = list((data_dir / "quarantine").glob("rec3.chunks.*"))
    assert moved and moved[0].is_symlink()  # moved as a link, target untouched
    assert target.read_bytes() == recording("rec3")
    assert "rec3" not in load(data_dir).sessions


def test_a_recording_cannot_join_another_logs_session(
    spooled: tuple[Path, Path],
) -> None:
    data_dir, spool = spooled
    (spool / "rec4.chunks").write_bytes(recording("rec4"))
    wait_for(lambda: "rec4" in load(data_dir).sessions)
    # Same process identity, another file: refused, not appended to rec4.
    (spool / "rec5.chunks").write_bytes(recording("rec5"))
    wait_for(lambda: list((data_dir / "quarantine").glob("rec5.chunks.*")))
    assert "rec5" not in load(data_dir).sessions


def test_start_lines_without_a_recorder_are_strace_logs() -> None:
    # Logs written before the recorder field existed.
    fields = json.loads(start_line("old")[len(MARKER_PREFIX) :])
    assert SessionStart.from_fields(fields).recorder == "strace"
    with pytest.raises(SessionLogError):
        SessionStart.from_fields({**fields, "recorder": "other"})


def test_transfer_lines_are_stored_once_across_a_restart(tmp_path: Path) -> None:
    """A transfer record's checkpoint lies past its line: read again, not stored."""
    data_dir = tmp_path / "data"
    spool = tmp_path / "recordings"
    spool.mkdir(mode=0o1733)
    spool.chmod(0o1733)
    head = recording("xfer").split(b"\n", 1)[0] + b"\n"
    moved = [
        Transfer(
            1_700_000_010.0 + i,
            TransferDirection.UPLOAD,
            f"/tmp/f{i}",
            f"web1/tmp/f{i}",
            10,
            "0" * 64,
            1_700_000_009.0,
            TransferOutcome.COMPLETE,
        )
        for i in range(2)
    ]
    path = spool / "xfer.chunks"
    path.write_bytes(head + encode_transfer(moved[0]))

    def run_once(expected: int) -> list[dict[str, object]]:
        store = Store(data_dir / "store", 0.05)
        ingest = Ingest(data_dir / "logs", store, recordings_dir=spool)
        store.on_flushed = ingest.on_flushed
        with store, ingest:
            wait_for(lambda: len(load(data_dir).commands) >= expected)
        return [c.to_document() for c in load(data_dir).commands]

    assert [c["seq"] for c in run_once(1)] == [1]
    with open(path, "ab") as f:  # the session goes on while no agent runs
        f.write(encode_transfer(moved[1]))
    stored = run_once(2)
    assert [(c["seq"], c["command"]) for c in stored] == [
        (1, "upload /tmp/f0"),
        (2, "upload /tmp/f1"),
    ]
    assert all(c["kind"] == "transfer" for c in stored)
