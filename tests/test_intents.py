"""Connection records: written by audit-shell, stored and linked by the agent."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from agent.daemon.ingest import Ingest
from agent.daemon.intents import START_GRACE_S, IntentLinker
from agent.daemon.store import Store
from agent.intent_file import (
    IntentError,
    client_addr_from,
    parse_intent,
    user_name,
    write_intent,
)
from agent.reader import load
from tests.harness import wait_for

UID = 4321  # the owner the agent must trust, whatever the file says


def spool_dir(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o1733)
    return spool


def record(spool: Path, tag: str, uid: int = UID) -> Path:
    """A record as `uid` writes it: owned by `uid` from the moment it is there.

    (Written, then chowned in place, the agent could read it in between as
    root's record, which names no runner: it then links to nothing.)
    """
    staging = spool.parent / f"{spool.name}.staging"
    staging.mkdir(exist_ok=True)
    path = write_intent(staging, tag, "web1", "10.0.0.7", 2222, "deploy", "192.0.2.9")
    os.chown(path, uid, -1)
    return path.rename(spool / path.name)


def start_line(tag: str, uid: int = UID, pid: int = 4242) -> bytes:
    argv = b"ssh\0-o\0SetEnv=AUDIT_SESSION=" + tag.encode()
    argv += b"\0-p\0002222\0-l\0deploy\0--\00010.0.0.7\0"
    fields = {
        "event": "start",
        "v": 1,
        "time": 1.0,
        "tag": tag,
        "ssh_pid": pid,
        "start_ticks": 77,
        "started_at": 1_800_000_000.0,
        "uid": uid,
        "user": user_name(uid),
        "tty": "/dev/pts/0",
        "argv_b64": base64.b64encode(argv).decode(),
    }
    return b"#bastion-audit " + json.dumps(fields).encode() + b"\n"


def test_write_is_exclusive_and_never_follows_a_link(tmp_path: Path) -> None:
    spool = spool_dir(tmp_path)
    path = write_intent(spool, "t1", "web1", "10.0.0.7", 22, "deploy", None)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_intent(spool, "t1", "web1", "10.0.0.7", 22, "deploy", None)
    (spool / "t2.json").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_intent(spool, "t2", "web1", "10.0.0.7", 22, "deploy", None)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(IntentError):
        write_intent(spool, "../x", "web1", "10.0.0.7", 22, "deploy", None)


def test_parse_trusts_the_owner_not_the_text() -> None:
    data = json.dumps(
        {
            "v": 1,
            "tag": "t1",
            "bastion_user": "root",
            "inventory_host": "web1",
            "address": "10.0.0.7",
            "port": 22,
            "remote_account": "deploy",
            "client_addr": None,
        }
    ).encode()
    intent = parse_intent(data, "t1", UID, "alice", 5.0)
    assert (intent.bastion_user, intent.uid, intent.client_addr) == ("alice", UID, None)
    assert intent.created_at == 5.0  # no time in the record: when it was read
    stamped = data.replace(b'"v": 1', b'"v": 1, "created_at": 3.5')
    assert parse_intent(stamped, "t1", UID, "alice", 5.0).created_at == 3.5
    future = data.replace(b'"v": 1', b'"v": 1, "created_at": 9.0')
    assert parse_intent(future, "t1", UID, "alice", 5.0).created_at == 5.0
    for bad in [
        b"",
        b"[]",
        data.replace(b'"t1"', b'"t2"'),
        data.replace(b"22", b"0"),
        data.replace(b'"v": 1', b'"v": 1, "created_at": "yesterday"'),
    ]:
        with pytest.raises(IntentError):
            parse_intent(bad, "t1", UID, "alice", 5.0)
    assert client_addr_from("192.0.2.9 50022 10.0.0.1 22") == "192.0.2.9"
    assert client_addr_from(None) is None


@pytest.mark.root
def test_pending_linked_and_not_started(tmp_path: Path) -> None:
    spool = spool_dir(tmp_path)
    store = Store(tmp_path / "store", 0.05)
    store.open()
    linker = IntentLinker(spool, store, shell_uids={UID})
    linker.open()
    record(spool, "t1")
    record(spool, "t2")
    linker.poll(now=1.0)
    store.flush()
    pending = load(tmp_path).sessions
    assert {s.status for s in pending.values()} == {"pending"}
    assert pending["t1"].bastion_user == user_name(UID)
    assert pending["t1"].client_addr == "192.0.2.9"
    linker.flushed(list(pending.values()))
    linker.remove_durable()
    assert list(spool.iterdir()) == []  # durable: the spool files are gone

    # t2 never gets a traced ssh.
    linker.poll(now=pending["t2"].started_at + START_GRACE_S + 1)
    store.flush()
    assert load(tmp_path).sessions["t2"].status == "not-started"


@pytest.mark.root
def test_ingest_links_the_traced_session_to_its_record(tmp_path: Path) -> None:
    spool = spool_dir(tmp_path)
    logs = tmp_path / "logs"
    store = Store(tmp_path / "store", 0.05)
    store.open()
    store.start()
    ingest = Ingest(logs, store, intents=IntentLinker(spool, store, shell_uids={UID}))
    store.on_flushed = ingest.on_flushed
    ingest.start()
    try:
        record(spool, "t1")
        # Another user's ssh with the same tag is not linked to the record.
        (logs / "t1~1-1.strace").write_bytes(start_line("t1", UID + 1, 4243))
        (logs / "t1.strace").write_bytes(start_line("t1"))

        session = wait_for(
            lambda: (s := load(tmp_path).sessions.get("t1")) and s.ssh_pid and s,
            timeout=10,
        )
        assert session.status == "live"
        assert session.origin == "audit-shell"
        assert session.inventory_host == "web1"
        assert session.remote_account == "deploy" == session.remote_user
        assert (session.host, session.port) == ("10.0.0.7", 2222)
        others = [s for s in load(tmp_path).sessions.values() if s.id != "t1"]
        assert [s.origin for s in others] == [None]
        wait_for(lambda: not list(spool.iterdir()), timeout=10)
    finally:
        ingest.stop()
        store.stop()

    # A record left in the spool by a crash is recognised, not stored twice.
    record(spool, "t1")
    store = Store(tmp_path / "store", 0.05)
    store.open()
    linker = IntentLinker(spool, store, shell_uids={UID})
    linker.open()
    linker.poll()
    linker.remove_durable()
    assert list(spool.iterdir()) == []
    assert store.pending_count == 0 and len(load(tmp_path).sessions) == 2


@pytest.mark.root
def test_unsafe_spool_and_files_are_not_read(tmp_path: Path) -> None:
    spool = spool_dir(tmp_path)
    store = Store(tmp_path / "store", 0.05)
    store.open()
    linker = IntentLinker(spool, store, shell_uids={UID})
    record(spool, "t1")
    (spool / "t2.json").symlink_to("/etc/passwd")
    (spool / "bad name.json").write_text("{}")
    os.utime(spool / "bad name.json", (0, 0))
    spool.chmod(0o777)  # writable by all without the sticky bit: refused
    linker.poll()
    assert store.sessions() == []
    spool.chmod(0o1733)
    linker.poll()
    assert [s.id for s in store.sessions()] == ["t1"]
    assert sorted(p.name for p in spool.iterdir()) == ["t1.json"]


@pytest.mark.root
def test_web_token_records_name_the_web_user_only_when_trusted(tmp_path: Path) -> None:
    spool = spool_dir(tmp_path)
    logs = tmp_path / "logs"
    runner = user_name(UID)  # the web terminal's account, which runs the ssh
    # audit-web's record (root's here: root is always trusted) ...
    write_intent(
        spool, "aw1", "web1", "10.0.0.7", 2222, "deploy", "192.0.2.9", "alice", runner
    )
    # ... and the same claim from an account that is not audit-web's.
    forged = write_intent(
        spool, "aw2", "web1", "10.0.0.7", 2222, "deploy", None, "alice", runner
    )
    data = forged.read_bytes()
    os.chown(forged, UID, -1)
    os.utime(forged, (0, 0))
    store = Store(tmp_path / "store", 0.05)
    store.open()
    store.start()
    ingest = Ingest(logs, store, intents=IntentLinker(spool, store, shell_uids={UID}))
    store.on_flushed = ingest.on_flushed
    ingest.start()
    try:
        (logs / "aw1.strace").write_bytes(start_line("aw1"))
        session = wait_for(
            lambda: (s := load(tmp_path).sessions.get("aw1")) and s.ssh_pid and s,
            timeout=10,
        )
        assert session.bastion_user == "alice"  # the web user, not the runner
        assert session.origin == "web-token"
        assert session.client_addr == "192.0.2.9"
        assert "aw2" not in load(tmp_path).sessions
        wait_for(lambda: not list(spool.iterdir()), timeout=10)
    finally:
        ingest.stop()
        store.stop()
    with pytest.raises(IntentError, match="may not write web-token records"):
        parse_intent(data, "aw2", UID, runner, 1.0)
    intent = parse_intent(data, "aw2", UID, runner, 1.0, may_name_user=True)
    assert (intent.bastion_user, intent.ssh_user) == ("alice", runner)
