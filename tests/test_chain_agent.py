"""The chain and retention with a real agent, sshd, ssh and bash.

A session typed through a traced ssh is proven by `audit-export --verify`
and each tampering of its record is named; `kill -9` of the agent while it
flushes leaves a chain that goes on exactly; retention prunes old sessions
and their recordings but never a held one, and the record stays provable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.casts import cast_path
from agent.daemon.signer import Chain, Signer
from agent.daemon.store import Store
from agent.records import Command, Session, iso
from tests import harness
from tests.test_chain import edit, find, shard
from tests.test_store import make_session

pytestmark = [pytest.mark.root, pytest.mark.slow]

DAY_S = 86400.0


def verify(data_dir: Path, *extra: str) -> Any:
    return harness.run_cli(
        "audit-export", "--data-dir", str(data_dir), "--verify", *extra
    )


def open_session(user: harness.TestUser, server: harness.Sshd, tag: str) -> Any:
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    )
    pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
    return child


def type_commands(child: Any, commands: list[str]) -> None:
    for command in commands:
        child.send(command.encode() + b"\r")
        child.expect(harness.PROMPT)


def stored(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def end_session(child: Any) -> None:
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()


def test_a_traced_session_is_proven_and_each_tampering_named(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    typed = [f"echo chained-{i}" for i in range(1, 6)]
    with harness.agent(data_dir):
        child = open_session(user, server, "chained")
        type_commands(child, typed)
        end_session(child)
        harness.wait_for(lambda: stored(data_dir, "chained") == typed, timeout=20)
        harness.wait_for(
            lambda: harness.sessions_in(data_dir)["chained"].status == "closed",
            timeout=20,
        )
        status = harness.run_cli("audit-agent", "status", "--data-dir", str(data_dir))
        assert "chain: key " in status.stdout, status.stdout
        key = harness.run_cli("audit-agent", "key", "--data-dir", str(data_dir))
    public = tmp_path / "bastion.pub"
    public.write_text(key.stdout)
    result = verify(data_dir, "--public-key", str(public))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "commands) in 1 shards; signed through link" in result.stdout
    assert "OK: complete and unaltered" in result.stdout

    def tampered(name: str, change: Any) -> str:
        copy = tmp_path / name
        shutil.copytree(data_dir, copy)
        edit(shard(copy), change)
        out = verify(copy, "--public-key", str(public))
        assert out.returncode == 5, out.stdout
        return str(out.stdout)

    deleted = tampered("deleted", lambda t: t["commands"].pop(find(t, "chained", 3)))
    assert "missing: between session chained seq 2" in deleted
    # An agent started on the edited store says so, and signs nothing over it.
    with harness.agent(tmp_path / "deleted") as again:
        copy = str(tmp_path / "deleted")
        problem = "the record is not being signed: the store does not verify"
        harness.wait_for(
            lambda: (
                problem
                in harness.run_cli("audit-agent", "status", "--data-dir", copy).stdout
            ),
            timeout=20,
        )
        assert "CHAIN: the store does not verify" in again.log_text()
        assert (
            harness.run_cli("audit-agent", "status", "--data-dir", copy).returncode == 4
        )

    def edited(t: dict[str, Any]) -> None:
        t["commands"][find(t, "chained", 4)]["command"] = "echo nothing-to-see"

    assert "session chained seq 4 (link" in tampered("edited", edited)

    def reordered(t: dict[str, Any]) -> None:
        c = t["commands"]
        one, two = find(t, "chained", 1), find(t, "chained", 2)
        c[one], c[two] = c[two], c[one]

    out = tampered("reordered", reordered)
    assert "session chained seq 1 (link" in out and ": reordered: " in out


def test_kill_9_while_flushing_keeps_one_chain(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    seed = int(os.environ.get("CHAIN_TEST_SEED", time.time()))
    rng = random.Random(seed)
    typed: list[str] = []
    with harness.agent(data_dir) as first:
        child = open_session(user, server, "killed")
        agent = first
        for round_ in range(6):
            # A paste of many lines: many commands, flushed while the kill lands.
            lines = [f"echo k{round_}-{i}" for i in range(15)]
            child.send(("\r".join(lines) + "\r").encode())
            time.sleep(rng.uniform(0.0, 0.4))
            agent.process.send_signal(signal.SIGKILL)
            agent.process.wait()
            typed += lines
            for line in lines:
                child.expect(f"{line[5:]}\r\n".encode())
            agent = _restart(data_dir)
        end_session(child)
        harness.wait_for(lambda: stored(data_dir, "killed") == typed, timeout=60)
        agent.process.send_signal(signal.SIGTERM)
        agent.process.wait(20)
    result = verify(data_dir)
    assert result.returncode == 0, f"seed {seed}: {result.stdout}"
    assert f"{len(typed)} commands)" in result.stdout, f"seed {seed}"
    links = [
        d["_chain"]["n"]
        for t in (
            json.loads(p.read_text())
            for p in sorted((data_dir / "store").glob("0*.json"))
        )
        for name in ("sessions", "commands")
        for d in t[name].values()
    ]
    assert len(links) == len(set(links)), f"seed {seed}: a link twice"


_RESTARTED: list[Any] = []


def _restart(data_dir: Path) -> harness.AgentProcess:
    manager = harness.agent(data_dir)
    agent = manager.__enter__()
    _RESTARTED.append(manager)
    return agent


@pytest.fixture(autouse=True)
def _stop_restarted() -> Iterator[None]:
    yield
    while _RESTARTED:
        _RESTARTED.pop().__exit__(None, None, None)


# -- retention ---------------------------------------------------------------


def old_session(
    store: Store, sid: str, tag: str, pid: int, ended_days_ago: float
) -> Session:
    started = time.time() - ended_days_ago * DAY_S - 600
    session = dataclasses.replace(
        make_session(sid, pid=pid), tag=tag, started_at=started, command_count=2
    )
    commands = [Command(sid, n, iso(started + n), f"echo {sid}-{n}") for n in (1, 2)]
    store.submit(session, commands)
    store.submit(session.ended(started + 600, "ssh ended"))
    store.flush()
    cast = cast_path(store.store_dir.parent, sid)
    cast.parent.mkdir(mode=0o700, exist_ok=True)
    cast.write_text('{"version": 2, "width": 80, "height": 24}\n')
    return session


def test_retention_prunes_old_sessions_and_casts_but_never_held_ones(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    store = Store(
        data_dir / "store", 0.05, chain=Chain(Signer.load_or_create(data_dir), data_dir)
    )
    store.open()
    old_session(store, "old1", "old1", 11, 30)
    old_session(store, "old2", "keep-tag", 12, 30)
    old_session(store, "old3", "old3", 13, 30)
    old_session(store, "recent", "recent", 14, 1)
    store.stop()
    quarantined = data_dir / "quarantine" / "x.strace.20260101T000000Z"
    quarantined.parent.mkdir(mode=0o700)
    quarantined.write_text("raw keys")
    os.utime(quarantined, (time.time() - 30 * DAY_S,) * 2)
    config = tmp_path / "agent.toml"
    config.write_text("retention_days = 7\nquarantine_retention_days = 7\n")
    cli = ("--data-dir", str(data_dir), "--config", str(config))

    held = harness.run_cli(
        "audit-agent", "hold", *cli, "--tag", "keep-tag", "--reason", "case 42"
    )
    assert held.returncode == 0, held.stderr
    assert harness.run_cli("audit-agent", "hold", *cli, "old3").returncode == 0
    dry = harness.run_cli("audit-agent", "prune", *cli, "--dry-run")  # no agent yet
    assert dry.returncode == 0, dry.stderr
    assert "would prune 1 sessions (2 commands, 3 chain links" in dry.stdout
    assert "kept on legal hold: old2 (tag keep-tag), old3 (session old3)" in dry.stdout

    with harness.agent(data_dir, "--config", str(config)):
        harness.wait_for(
            lambda: "old1" not in harness.sessions_in(data_dir), timeout=30
        )
        assert not cast_path(data_dir, "old1").exists()
        assert not quarantined.exists()
        for kept in ("old2", "old3", "recent"):
            assert cast_path(data_dir, kept).exists()
        assert sorted(harness.sessions_in(data_dir)) == ["old2", "old3", "recent"]

        child = open_session(user, server, "live")  # recording goes on meanwhile
        type_commands(child, ["echo after-prune"])
        assert harness.run_cli("audit-agent", "unhold", *cli, "old3").returncode == 0
        asked = harness.run_cli("audit-agent", "prune", *cli)  # through the agent
        assert asked.returncode == 0, asked.stderr
        assert "pruned 1 sessions (2 commands, 3 chain links" in asked.stdout
        assert "old3" in asked.stdout
        end_session(child)
        harness.wait_for(
            lambda: stored(data_dir, "live") == ["echo after-prune"], timeout=20
        )

    assert sorted(harness.sessions_in(data_dir)) == ["live", "old2", "recent"]
    result = verify(data_dir)
    assert result.returncode == 0, result.stdout
    assert "pruned: 6 links in 2 signed prune records" in result.stdout
    assert "by audit-agent (retention): 1 sessions, 2 commands" in result.stdout
    assert "by root: 1 sessions, 2 commands" in result.stdout

    # Someone deletes a kept session and widens a prune record over it.
    prunes = data_dir / "store" / "prunes.json"
    records = json.loads(prunes.read_text())
    tables = json.loads(shard(data_dir).read_text())
    victim = [
        d["_chain"] for d in tables["commands"].values() if d["session"] == "recent"
    ]
    records[0]["runs"] += [[c["n"], c["n"], c["hash"]] for c in victim]
    prunes.write_text(json.dumps(records))
    edit(
        shard(data_dir),
        lambda t: [t["commands"].pop(find(t, "recent", n)) for n in (1, 2)],
    )
    forged = verify(data_dir)
    assert forged.returncode == 5
    assert "prune record of" in forged.stdout and "bad signature" in forged.stdout
