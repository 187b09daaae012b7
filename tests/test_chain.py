"""The hash chain on a real store: `audit-export --verify` proves it or names the break.

The store is written by the real writer (Store with its Chain and the key
it makes under DATA_DIR), then edited by hand the way someone with the files
would, and checked by the real `audit-export --verify`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.chain import (
    COMMAND,
    GENESIS,
    PRUNES_FILE,
    SESSION,
    PublicKey,
    doc_hash,
    public_key_path,
)
from agent.daemon import store as store_module
from agent.daemon.signer import Chain, Signer
from agent.daemon.store import Store
from agent.exits import ExitStatus
from agent.records import Session
from agent.shards import list_shards, read_shard_digest
from tests.harness import run_cli
from tests.test_store import commands, make_session


def chained_store(data_dir: Path) -> Store:
    store = Store(
        data_dir / "store",
        flush_interval_s=0.05,
        chain=Chain(Signer.load_or_create(data_dir), data_dir),
    )
    store.open()
    return store


def fill(store: Store, sid: str, pid: int, count: int, per_flush: int = 3) -> Session:
    session = make_session(sid, pid=pid)
    seq = 0
    while seq < count:
        n = min(per_flush, count - seq)
        batch = commands(session, seq + 1, n)
        seq += n
        session = dataclasses.replace(session, command_count=seq)
        store.submit(session, batch)
        store.flush()
    return session


def verify(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("audit-export", "--data-dir", str(data_dir), "--verify", *extra)


def shard(data_dir: Path, i: int = 0) -> Path:
    return list_shards(data_dir / "store")[i]


def edit(path: Path, change: Any) -> None:
    tables = json.loads(path.read_text())
    change(tables)
    path.write_text(json.dumps(tables))


def find(tables: dict[str, Any], session: str, seq: int) -> str:
    return next(
        k
        for k, d in tables["commands"].items()
        if d["session"] == session and d["seq"] == seq
    )


@pytest.fixture
def stored(data_dir: Path) -> Path:
    """Two sessions, ended, in one shard; the writer stopped cleanly."""
    store = chained_store(data_dir)
    a = fill(store, "a", 1, 6)
    b = fill(store, "b", 2, 4)
    store.submit(a.ended(1_800_000_100.0, "ssh ended"))
    store.submit(b.ended(1_800_000_100.0, "ssh ended"))
    store.stop()
    return data_dir


def test_an_untouched_store_verifies(stored: Path) -> None:
    result = verify(stored)
    assert result.returncode == ExitStatus.SUCCESS, result.stdout + result.stderr
    assert "verified: 14 links (4 session states, 10 commands) in 1 shards" in (
        result.stdout
    )
    assert "OK: complete and unaltered up to link 14\n" in result.stdout


def test_a_link_is_the_hash_of_its_fields_and_its_predecessor(stored: Path) -> None:
    """What the README documents, recomputed without the project's walk."""
    key = PublicKey.read(public_key_path(stored))
    tables = json.loads(shard(stored).read_text())
    links = sorted(
        [(d["_chain"]["n"], SESSION, d) for d in tables["sessions"].values()]
        + [(d["_chain"]["n"], COMMAND, d) for d in tables["commands"].values()],
        key=lambda e: e[0],
    )
    prev = GENESIS
    for n, kind, doc in links:
        assert doc_hash(key.chain_id, n, kind, prev, doc) == doc["_chain"]["hash"]
        prev = doc["_chain"]["hash"]
    assert [n for n, _, _ in links] == list(range(1, 15))


def test_a_deleted_command_is_named(stored: Path) -> None:
    edit(shard(stored), lambda t: t["commands"].pop(find(t, "a", 3)))
    result = verify(stored)
    assert result.returncode == ExitStatus.NOT_VERIFIED
    assert (
        "BROKEN: shard 00000001.json: link 3: missing: between session a seq 2 "
        "(link 2) and session a state (link 4)\n"
    ) in result.stdout


def test_an_edited_command_is_named(stored: Path) -> None:
    def change(t: dict[str, Any]) -> None:
        t["commands"][find(t, "b", 2)]["command"] = "innocent"

    edit(shard(stored), change)
    result = verify(stored)
    assert result.returncode == ExitStatus.NOT_VERIFIED
    assert "BROKEN: shard 00000001.json: session b seq 2" in result.stdout
    assert ": edited: its fields or its predecessor do not match its hash" in (
        result.stdout
    )


def test_reordered_commands_are_named(stored: Path) -> None:
    def change(t: dict[str, Any]) -> None:
        one, two = find(t, "a", 1), find(t, "a", 2)
        c = t["commands"]
        c[one], c[two] = c[two], c[one]

    edit(shard(stored), change)
    result = verify(stored)
    assert result.returncode == ExitStatus.NOT_VERIFIED
    assert "BROKEN: shard 00000001.json: session a seq 1 (link 1): reordered" in (
        result.stdout
    )


def test_a_command_rehashed_to_hide_an_edit_breaks_the_checkpoint(
    stored: Path,
) -> None:
    """Anyone can recompute hashes; only the key signs: the checkpoint tells."""
    key = PublicKey.read(public_key_path(stored))

    def change(t: dict[str, Any]) -> None:
        docs = sorted(
            [(d["_chain"]["n"], SESSION, d) for d in t["sessions"].values()]
            + [(d["_chain"]["n"], COMMAND, d) for d in t["commands"].values()],
            key=lambda e: e[0],
        )
        t["commands"][find(t, "a", 5)]["command"] = "rm nothing"
        prev = GENESIS
        for n, kind, doc in docs:
            doc["_chain"]["hash"] = prev = doc_hash(key.chain_id, n, kind, prev, doc)

    edit(shard(stored), change)
    result = verify(stored)
    assert result.returncode == ExitStatus.NOT_VERIFIED
    assert "checkpoint of link 14" in result.stdout
    assert "no longer has the hash that was signed" in result.stdout


def test_a_forged_checkpoint_signature_is_named(stored: Path) -> None:
    def change(t: dict[str, Any]) -> None:
        (cp,) = t["checkpoints"].values()
        cp["n"] = 13

    edit(shard(stored), change)
    result = verify(stored)
    assert result.returncode == ExitStatus.NOT_VERIFIED
    assert ": bad signature: not signed by key" in result.stdout


def test_another_key_does_not_verify(stored: Path, tmp_path: Path) -> None:
    other = Signer.load_or_create(tmp_path / "elsewhere")
    pem = tmp_path / "other.pub"
    pem.write_bytes(other.public_pem)
    assert verify(stored, "--public-key", str(pem)).returncode == 5
    mine = tmp_path / "mine.pub"
    shutil.copy(public_key_path(stored), mine)
    assert verify(stored, "--public-key", str(mine)).returncode == 0


def test_the_newest_shard_removed_is_a_truncation(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SHARD_MAX_COMMANDS", 6)
    store = chained_store(data_dir)
    session = fill(store, "a", 1, 9)
    store.submit(session.ended(1_800_000_100.0, "ssh ended"))
    store.stop()
    assert len(list_shards(data_dir / "store")) == 2
    assert verify(data_dir).returncode == 0
    shard(data_dir, 1).unlink()
    result = verify(data_dir)
    assert result.returncode == ExitStatus.NOT_VERIFIED
    assert "truncated after the last checkpoint" in result.stdout


def test_records_from_before_the_chain_are_counted_not_broken(data_dir: Path) -> None:
    old = Store(data_dir / "store", flush_interval_s=0.05)  # an agent without it
    old.open()
    fill(old, "old", 1, 4)
    old.stop()
    result = verify(data_dir)
    assert result.returncode == 0, result.stderr
    assert "5 records before the chain began" in result.stdout

    store = chained_store(data_dir)  # this version goes on with the same shard
    fill(store, "new", 2, 3)
    store.stop()
    result = verify(data_dir)
    assert result.returncode == 0, result.stdout
    assert "before the chain: 5 records before the chain began" in result.stdout
    assert "verified: 4 links (1 session states, 3 commands)" in result.stdout

    # A record slipped in without a link once the chain runs is no legacy.
    def change(t: dict[str, Any]) -> None:
        t["commands"]["999"] = {"session": "new", "seq": 4, "time": "x", "command": "y"}

    edit(shard(data_dir), change)
    result = verify(data_dir)
    assert result.returncode == 5
    assert "session new seq 4: not chained" in result.stdout


def test_an_agent_does_not_sign_over_a_store_edited_while_it_was_down(
    stored: Path,
) -> None:
    edit(shard(stored), lambda t: t["commands"].pop(find(t, "b", 4)))
    store = chained_store(stored)
    assert store.chain is not None and store.chain.problem is not None
    assert "session b" in store.chain.problem and "missing" in store.chain.problem
    fill(store, "c", 3, 2)
    store.stop()  # chained, but no checkpoint signed over the break
    tables = json.loads(shard(stored).read_text())
    assert len(tables["checkpoints"]) == 1
    assert verify(stored).returncode == 5


def test_kill_between_writes_continues_the_chain_exactly(stored: Path) -> None:
    """A writer that dies leaves only whole writes; the next one goes on from them."""
    again = chained_store(stored)  # as after kill -9: opened from the shards alone
    assert again.chain is not None and again.chain.head.n == 14
    assert again.chain.problem is None
    fill(again, "c", 3, 2)
    again.stop()
    result = verify(stored)
    assert result.returncode == 0, result.stdout
    assert "verified: 17 links" in result.stdout


# -- pruning -----------------------------------------------------------------


def test_verify_passes_after_a_prune_and_shows_it(stored: Path) -> None:
    store = chained_store(stored)
    result = store.prune(["a"], by="tester", reason="request")
    assert result.sessions == ("a",) and result.removed.commands == 6
    store.submit(make_session("a", pid=1), commands(make_session("a", pid=1), 7, 1))
    assert store.new_session_id("a") == "a~2"  # a pruned id is never given again
    fill(store, "c", 3, 2)
    store.stop()
    out = verify(stored)
    assert out.returncode == 0, out.stdout
    assert "pruned: 8 links in 1 signed prune records" in out.stdout
    assert "by tester: 1 sessions, 6 commands, 8 links" in out.stdout
    exported = json.loads(run_cli("audit-export", "--data-dir", str(stored)).stdout)
    assert {r["session"] for r in exported} == {"b", "c"}


def test_a_forged_prune_range_fails(stored: Path) -> None:
    store = chained_store(stored)
    store.prune(["a"], by="tester", reason="request")
    store.stop()
    prunes = stored / "store" / PRUNES_FILE
    records = json.loads(prunes.read_text())
    tables = json.loads(shard(stored).read_text())
    doc = tables["commands"][find(tables, "b", 1)]
    n, h = doc["_chain"]["n"], doc["_chain"]["hash"]
    # Widen the signed run over b's first command, and delete that command.
    records[0]["runs"].append([n, n, h])
    prunes.write_text(json.dumps(records))
    edit(shard(stored), lambda t: t["commands"].pop(find(t, "b", 1)))
    result = verify(stored)
    assert result.returncode == 5
    assert "prune record of" in result.stdout and "bad signature" in result.stdout


def test_a_prune_record_deleted_leaves_the_gap_unexplained(stored: Path) -> None:
    store = chained_store(stored)
    store.prune(["b"], by="tester", reason="request")
    store.stop()
    (stored / "store" / PRUNES_FILE).unlink()
    result = verify(stored)
    assert result.returncode == 5
    assert ": missing: between" in result.stdout


def test_a_prune_cut_short_by_a_crash_is_finished_at_the_next_start(
    stored: Path,
) -> None:
    before = shard(stored).read_bytes()
    store = chained_store(stored)
    store.prune(["a"], by="tester", reason="request")
    store.stop()
    shard(stored).write_bytes(before)  # as if the rewrite had never happened
    out = verify(stored)
    assert out.returncode == 0, out.stdout
    assert "pruned records are still in their shards" in out.stdout
    again = chained_store(stored)
    again.stop()
    assert "a" not in {
        d["session"] for d in json.loads(shard(stored).read_text())["commands"].values()
    }
    assert verify(stored).returncode == 0


def test_a_start_hashes_only_what_changed_since_the_last(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SHARD_MAX_COMMANDS", 6)
    store = chained_store(data_dir)
    fill(store, "a", 1, 20)
    store.stop()
    assert len(list_shards(data_dir / "store")) == 4
    chained_store(data_dir)  # a start: walks them all, and remembers them
    chain = Chain(Signer.load_or_create(data_dir), data_dir)
    opening = chain.opening(data_dir / "store")
    for path in list_shards(data_dir / "store"):
        tables, digest = read_shard_digest(path)
        opening.feed(path.name, digest, tables)
    chain.opened(opening)
    assert opening.skipped == 4 and chain.problem is None  # all verified before

    # A shard edited since is walked again, and the edit found.
    edit(shard(data_dir, 1), lambda t: t["commands"].pop(find(t, "a", 8)))
    again = chained_store(data_dir)
    assert again.chain is not None and again.chain.problem is not None
    assert "session a seq 9" in again.chain.problem

    # A cache forged by hand is not trusted: every shard is walked.
    cache = data_dir / "chain" / "verified.json"
    doc = json.loads(cache.read_text())
    doc["shards"][1][1] = read_shard_digest(shard(data_dir, 1))[1]
    cache.write_text(json.dumps(doc))
    forged = chained_store(data_dir)
    assert forged.chain is not None and forged.chain.problem is not None
