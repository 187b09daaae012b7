"""The store on a real filesystem: atomic shards, resume state, readers."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from tinydb import TinyDB

from agent.daemon import flush_pacer
from agent.daemon import store as store_module
from agent.daemon.shard_file import ShardFile
from agent.daemon.store import Store
from agent.files import IOV_MAX, write_atomic
from agent.reader import StoreFollower, load
from agent.records import Command, Session, SessionStatus, iso
from agent.shards import list_shards
from parsers.events import Checkpoint
from tests.harness import wait_for
from tracer.session_log import SessionStart


def make_session(sid: str = "t1", pid: int = 100, ticks: int = 5) -> Session:
    start = SessionStart(
        tag=sid.split("~")[0],
        ssh_pid=pid,
        start_ticks=ticks,
        started_at=1_800_000_000.0,
        uid=1000,
        user="alice",
        tty="/dev/pts/3",
        argv=("ssh", "-p", "2200", "bob@db1"),
    )
    return Session.new(sid, start, f"{sid}.strace")


def commands(session: Session, first: int, count: int) -> list[Command]:
    return [
        Command(session.id, n, iso(1_800_000_000.0 + n), f"cmd {n}")
        for n in range(first, first + count)
    ]


def cp(offset: int) -> Checkpoint:
    return Checkpoint(
        offset=offset, skip=3, rows=24, cols=80, readline=True, prompt="$ "
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def open_store(data_dir: Path) -> Store:
    store = Store(data_dir / "store", flush_interval_s=0.05)
    store.open()
    return store


def test_flush_writes_one_whole_shard_and_resume_state(data_dir: Path) -> None:
    store = open_store(data_dir)
    session = make_session()
    store.submit(session)
    state = session
    for first in (1, 4):
        state = dataclasses.replace(
            state, command_count=first + 2, checkpoint=cp(first * 100)
        )
        store.submit(state, commands(session, first, 3))
    store.flush()
    (shard,) = list_shards(data_dir / "store")
    assert not list((data_dir / "store").glob("*.tmp"))
    assert oct(os.stat(shard).st_mode & 0o777) == "0o600"
    tables = json.loads(shard.read_text())
    assert len(tables["sessions"]) == 1 and len(tables["commands"]) == 6

    reopened = open_store(data_dir)
    again = reopened.processes.find(session.identity, session.log)
    assert again is not None
    assert again.command_count == 6 and again.checkpoint == cp(400)
    assert [c.command for c in load(data_dir).commands] == [
        f"cmd {n}" for n in range(1, 7)
    ]


def test_shards_stay_tinydb_databases(data_dir: Path) -> None:
    """The writer appends and updates documents itself (agent/daemon/shard_file.py),
    not through TinyDB's Table: TinyDB must still read the shard as written,
    number documents as the writer did, and go on from there."""
    store = open_store(data_dir)
    one, two = make_session("t1", pid=1), make_session("t2", pid=2)
    store.submit(one)
    store.submit(two)
    store.flush()
    for first in (1, 3):  # updates in place of both sessions, commands appended
        for s in (one, two):
            state = dataclasses.replace(s, command_count=first + 1)
            store.submit(state, commands(s, first, 2))
        store.flush()
    reopened = open_store(data_dir)  # the newest shard read back, then written on
    three = make_session("t3", pid=3)
    reopened.submit(three, commands(three, 1, 1))
    reopened.flush()
    (shard,) = list_shards(data_dir / "store")
    on_disk = json.loads(shard.read_text())

    db = TinyDB(shard, access_mode="r")
    try:
        assert set(db.tables()) == {"sessions", "commands"}
        sessions, cmds = db.table("sessions"), db.table("commands")
        assert [d.doc_id for d in sessions.all()] == [1, 2, 3]
        assert [d.doc_id for d in cmds.all()] == list(range(1, 10))
        assert {d.doc_id: dict(d) for d in cmds.all()} == {
            int(k): v for k, v in on_disk["commands"].items()
        }
        by_id = {d["id"]: d for d in sessions.all()}
        assert by_id["t1"]["command_count"] == 4 and by_id["t3"]["command_count"] == 0
        assert [d["command"] for d in cmds.all()] == [
            "cmd 1", "cmd 2", "cmd 1", "cmd 2", "cmd 3", "cmd 4", "cmd 3", "cmd 4",
            "cmd 1",
        ]  # fmt: skip
    finally:
        db.close()


def test_a_shard_file_is_exactly_the_json_of_its_tables(tmp_path: Path) -> None:
    """Each table's text is kept between flushes (appended to, joined again
    after an update): every flush must still write json.dumps of the tables."""
    rng = random.Random(22)
    path = tmp_path / "00000001.json"
    shard, tables = ShardFile(path), {}
    for round_ in range(60):
        for _ in range(rng.randrange(4)):
            table = rng.choice(("sessions", "commands", "access", "checkpoints"))
            docs = [
                {"id": f"s{rng.randrange(5)}", "n": round_, "t": 'ünï \u2028 "q"'}
                for _ in range(rng.randrange(3))
            ]
            ids = shard.append(table, docs)
            rows = tables.setdefault(table, {})
            rows.update({str(i): doc for i, doc in zip(ids, docs, strict=True)})
        if tables.get("sessions") and rng.random() < 0.5:
            key = rng.choice(list(tables["sessions"]))
            shard.update("sessions", int(key), {"n": -round_})
            tables["sessions"][key] = {**tables["sessions"][key], "n": -round_}
        shard.dirty = True
        shard.flush()
        expected = json.dumps(tables, ensure_ascii=False, separators=(",", ":"))
        assert path.read_bytes() == expected.encode()
        assert shard.size == path.stat().st_size
        if round_ == 30:  # read back, as the writer does after a restart
            shard = ShardFile(path, json.loads(path.read_text()))


def test_write_atomic_writes_its_parts_in_order(tmp_path: Path) -> None:
    """More parts than one writev takes, empty ones among them."""
    parts = [str(i).encode() * (i % 3) for i in range(3 * IOV_MAX + 7)]
    write_atomic(tmp_path / "f", parts)
    assert (tmp_path / "f").read_bytes() == b"".join(parts)
    write_atomic(tmp_path / "f", b"")
    assert (tmp_path / "f").read_bytes() == b""


def test_a_batch_flushes_its_commands_in_its_own_thread(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest's rounds: commands submitted in a batch() wake no writer,
    are written when it ends (by the thread that ran it), or at batch_due()
    when the last flush was too recent; nothing is lost in between."""
    # A gap no fsync of a loaded machine outlasts: the second batch is in it.
    monkeypatch.setattr(flush_pacer, "FLUSH_MIN_GAP_S", 1.0)
    store = Store(data_dir / "store", flush_interval_s=60.0)  # no interval flush
    store.open()
    store.start()
    try:
        session = make_session()
        flushers: list[str] = []
        store.on_flushed = lambda _: flushers.append(threading.current_thread().name)
        with store.batch():
            store.submit(session, commands(session, 1, 2))
            assert not list_shards(data_dir / "store")  # held: nothing written yet
        assert [c.command for c in load(data_dir).commands] == ["cmd 1", "cmd 2"]
        assert flushers == [threading.current_thread().name]
        with store.batch():  # within the gap of that flush: it waits
            store.submit(session, commands(session, 3, 1))
        due = store.batch_due()
        assert due is not None and len(load(data_dir).commands) == 2
        time.sleep(max(0.0, due - time.monotonic()))
        with store.batch():  # nothing new, but the commands held are due
            pass
        assert len(load(data_dir).commands) == 3 and store.batch_due() is None
        assert flushers == [threading.current_thread().name] * 2
        store.submit(session, commands(session, 4, 1))  # outside: the writer's
        wait_for(lambda: len(load(data_dir).commands) == 4, timeout=10)
        assert flushers[-1] == "store-writer"
    finally:
        store.stop()


def test_two_flushing_threads_tell_in_the_order_they_wrote(data_dir: Path) -> None:
    """The writer and a batch() both flush, as the agent's writer and ingest
    do: what each flush made durable is told in the order written (the events
    sink drops a command whose seq is not past the last it told)."""
    store = Store(data_dir / "store", flush_interval_s=1.0)
    store.open()
    told: list[int] = []
    flushers: Counter[str] = Counter()

    def committed(batch: list[tuple[Session, list[Command]]]) -> None:
        flushers[threading.current_thread().name] += 1
        told.extend(c.seq for _, cmds in batch for c in cmds)

    store.on_committed = committed
    store.start()
    session, seq, lock = make_session(), [0], threading.Lock()

    def submit() -> None:
        with lock:  # one session's commands, in seq order
            seq[0] += 1
            state = dataclasses.replace(session, command_count=seq[0])
            store.submit(state, commands(session, seq[0], 1))

    def rounds() -> None:  # as the ingest's: its commands, then at batch_due
        for _ in range(100):
            with store.batch():
                submit()
            due = store.batch_due()
            time.sleep(max(0.0, (due or 0.0) - time.monotonic()) or 0.003)

    other = threading.Thread(target=rounds, name="rounds")
    other.start()
    for _ in range(100):
        submit()  # outside a batch: the writer's
        time.sleep(0.003)
    other.join()
    store.stop()
    assert told == list(range(1, 201))
    assert flushers["rounds"] and flushers["store-writer"]


def test_a_reused_tag_gets_its_own_id(data_dir: Path) -> None:
    store = open_store(data_dir)
    store.submit(make_session("t1", pid=1))
    store.flush()
    reopened = open_store(data_dir)
    assert reopened.new_session_id("t1") == "t1~2"
    reopened.submit(make_session("t1~2", pid=2))
    assert reopened.new_session_id("t1") == "t1~3"


def test_shards_roll_over_and_readers_merge_them(data_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "SHARD_MAX_COMMANDS", 10)
    store = open_store(data_dir)
    session = make_session()
    seq = 0
    for _ in range(5):
        batch = commands(session, seq + 1, 4)
        seq += 4
        session = dataclasses.replace(session, command_count=seq)
        store.submit(session, batch)
        store.flush()
    shards = list_shards(data_dir / "store")
    assert len(shards) == 2  # 12 commands sealed the first; the second holds 8
    snapshot = load(data_dir)
    assert [c.seq for c in snapshot.commands] == list(range(1, 21))
    assert snapshot.sessions["t1"].command_count == 20  # the newest document wins


def test_shards_are_sealed_by_size_as_well(data_dir: Path, monkeypatch) -> None:
    """Sessions alone (a flood of connection records) also roll shards over."""
    monkeypatch.setattr(store_module, "SHARD_MAX_BYTES", 8192)
    store = open_store(data_dir)
    for n in range(80):
        store.submit(make_session(f"flood{n}", pid=n + 1))
        if n % 4 == 3:
            store.flush()
    shards = list_shards(data_dir / "store")
    assert len(shards) > 2
    # A shard grows by at most one flush past the bound.
    assert all(p.stat().st_size < 8192 + 4 * 1024 for p in shards)
    assert sorted(load(data_dir).sessions) == sorted(f"flood{n}" for n in range(80))
    reopened = open_store(data_dir)  # a restart writes on in a shard not full
    reopened.submit(make_session("after", pid=99))
    reopened.flush()
    assert "after" in load(data_dir).sessions


def test_a_tag_used_many_times_gets_the_next_number(data_dir: Path) -> None:
    store = open_store(data_dir)
    for n in range(1, 200):
        sid = store.new_session_id("t1")
        assert sid == ("t1" if n == 1 else f"t1~{n}")
        store.submit(make_session(sid, pid=n))


def test_corrupt_shard_is_quarantined_and_named_by_readers(data_dir: Path) -> None:
    store = open_store(data_dir)
    store.submit(
        make_session("good", pid=1), commands(make_session("good", pid=1), 1, 2)
    )
    store.flush()
    bad = data_dir / "store" / "00000002.json"
    bad.write_bytes(b'{"sessions": {"1": {"id": "half')  # truncated by hand
    snapshot = load(data_dir)
    assert [c.command for c in snapshot.commands] == ["cmd 1", "cmd 2"]
    assert len(snapshot.errors) == 1 and "00000002.json" in snapshot.errors[0]

    reopened = open_store(data_dir)  # the agent moves it aside and goes on
    assert not bad.exists()
    assert len(list((data_dir / "quarantine").iterdir())) == 1
    reopened.submit(
        make_session("next", pid=2), commands(make_session("next", pid=2), 1, 1)
    )
    reopened.flush()
    assert [c.session for c in load(data_dir).commands] == ["good", "good", "next"]


def test_follower_returns_each_command_once(data_dir: Path) -> None:
    store = open_store(data_dir)
    session = make_session()
    follower = StoreFollower(data_dir)
    assert follower.poll() == []
    store.submit(session, commands(session, 1, 2))
    store.flush()
    assert [c.seq for c in follower.poll()] == [1, 2]
    assert follower.poll() == []
    store.submit(session, commands(session, 3, 1))
    store.flush()
    assert [c.seq for c in follower.poll()] == [3]
    assert follower.sessions["t1"].host == "db1"


def test_readers_never_see_a_torn_shard_while_the_agent_writes(data_dir: Path) -> None:
    store = open_store(data_dir)
    store.start()
    session = make_session()

    def write() -> None:
        for n in range(0, 3000, 10):
            store.submit(session, commands(session, n + 1, 10))
            time.sleep(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    seen_errors = []
    reads = 0
    while writer.is_alive() or reads < 50:
        snapshot = load(data_dir)
        seen_errors.extend(snapshot.errors)
        seqs = [c.seq for c in snapshot.commands]
        assert seqs == list(range(1, len(seqs) + 1))
        reads += 1
    writer.join()
    store.stop()
    assert seen_errors == []
    assert len(load(data_dir).commands) == 3000


def test_closed_session_round_trips(data_dir: Path) -> None:
    session = dataclasses.replace(
        make_session(),
        status=SessionStatus.CLOSED,
        ended_at=1_800_000_100.5,
        end_reason="ssh exited with 0",
        gaps=((1_800_000_010.0, 1_800_000_020.0),),
    )
    assert Session.from_document(session.to_document()) == dataclasses.replace(
        session, started_at=1_800_000_000.0
    )
    public = session.public_fields()
    assert "_ingest" not in public and public["ended_at"] == "2027-01-15T08:01:40.500Z"
