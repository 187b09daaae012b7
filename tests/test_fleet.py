"""The fleet store with a real PostgreSQL 15: schema, shipping, readers, refusals.

Stores are written by the real store writer (agent/daemon/store.py) into
temporary data directories and shipped by the real Shipper; the CLIs run as
subprocesses. Each test module gets a cluster of its own (tests/pg_harness.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.casts import CASTS_DIR
from agent.daemon.cast_state import CastState
from agent.daemon.shipper import Shipper, ShipState
from agent.daemon.store import Store
from agent.fleet_config import FleetConfig
from agent.fleet_schema import migrate
from agent.records import Command, Session, iso
from tests import harness
from tests.pg_harness import PgServer, postgres

pytestmark = [pytest.mark.root, pytest.mark.slow]

AGENT_PASSWORD = "agent-secret-1"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with postgres() as server:
        with server.connect(autocommit=False) as conn:
            migrate(conn)
        for b in ("b1", "b2", "dup"):
            server.add_agent_role(f"agent_{b}", AGENT_PASSWORD, b)
        server.add_auditor_role("alice", "auditor-secret")
        yield server


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / f"pw-{abs(hash(password))}"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def fleet_for(
    pg: PgServer, tmp_path: Path, bastion: str, **more: object
) -> FleetConfig:
    values: dict[str, object] = {
        "database": pg.dsn(f"agent_{bastion}"),
        "password_file": password_file(tmp_path, AGENT_PASSWORD),
        "bastion": bastion,
        "retry_interval_s": 0.2,
    }
    values.update(more)
    return FleetConfig(**values)  # type: ignore[arg-type]


def config_file(tmp_path: Path, data_dir: Path, fleet: FleetConfig) -> Path:
    path = tmp_path / f"agent-{fleet.bastion}.toml"
    path.write_text(
        f'data_dir = "{data_dir}"\n[fleet]\ndatabase = "{fleet.database}"\n'
        f'password_file = "{fleet.password_file}"\nbastion = "{fleet.bastion}"\n'
    )
    return path


def session(sid: str, ssh_pid: int = 4242) -> Session:
    return Session(
        id=sid,
        tag=sid.split("~")[0],
        bastion_user="root",
        remote_user="alice",
        host="db1",
        port=22,
        ssh_pid=ssh_pid,
        tty="/dev/pts/9",
        started_at=time.time(),
    )


def store_commands(store: Store, s: Session, n: int, text: str = "echo") -> Session:
    for _ in range(n):
        s = s.counted()
        store.submit(
            s,
            [
                Command(
                    s.id, s.command_count, iso(time.time()), f"{text} {s.command_count}"
                )
            ],
        )
    return s


def fleet_seqs(pg: PgServer, bastion: str, sid: str) -> list[int]:
    rows = pg.sql(
        "SELECT seq FROM commands WHERE bastion = %s AND session = %s ORDER BY seq",
        (bastion, sid),
    )
    return [r[0] for r in rows]


def wait_seqs(
    pg: PgServer, bastion: str, sid: str, n: int, timeout: float = 30
) -> None:
    harness.wait_for(
        lambda: fleet_seqs(pg, bastion, sid) == list(range(1, n + 1)), timeout=timeout
    )


def cli(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return harness.run_cli(tool, *args)


def test_fleet_init_applies_each_migration_once(pg: PgServer, tmp_path: Path) -> None:
    dsn = pg.dsn()
    env_file = password_file(tmp_path, pg.password)
    config = tmp_path / "init.toml"
    config.write_text(f'[fleet]\ndatabase = "{dsn}"\npassword_file = "{env_file}"\n')
    result = cli("audit-agent", "fleet-init", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "schema version 3 (nothing to do)" in result.stdout
    assert pg.sql("SELECT version FROM fleet_schema ORDER BY version") == [
        (1,),
        (2,),
        (3,),
    ]


def test_the_auditors_view_has_every_column_of_commands(pg: PgServer) -> None:
    # `SELECT *` in a view is expanded when the view is made: a migration that
    # adds a column to commands must make auditor_commands again, or auditors
    # would not see it (agent/fleet_schema.py).
    def columns(relation: str) -> list[tuple[str, str]]:
        return [
            (name, kind)
            for name, kind in pg.sql(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s"
                " ORDER BY ordinal_position",
                (relation,),
            )
        ]

    assert columns("commands")
    assert columns("auditor_commands") == columns("commands")


def test_one_agent_ships_every_command_once_and_readers_read_it(
    pg: PgServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    fleet = fleet_for(pg, tmp_path, "b1")
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, fleet) as shipper:
        s = store_commands(store, session("one"), 30)
        s = s.ended(time.time(), "ssh exited")
        store.submit(s)
        wait_seqs(pg, "b1", "one", 30)
        harness.wait_for(lambda: shipper.snapshot().state == ShipState.CAUGHT_UP)
        harness.wait_for(
            lambda: (
                pg.sql("SELECT status FROM sessions WHERE id = 'one'") == [("closed",)]
            )
        )
        assert shipper.snapshot().lag_records == 0
    cursor = json.loads((data_dir / "fleet.cursor.json").read_text())
    assert cursor["bastion"] == "b1" and cursor["doc"] == 30
    config = config_file(tmp_path, data_dir, fleet)
    # Read with the same configuration, this bastion's records name it as the
    # fleet's do: one name in both.
    local = harness.export(data_dir, "--config", str(config))
    fleet_export = cli("audit-export", "--config", str(config), "--session", "one")
    assert fleet_export.returncode == 0, fleet_export.stderr
    records = json.loads(fleet_export.stdout)
    assert [r["bastion"] for r in records] == ["b1"] * 30
    assert records == [r for r in local if r["session"] == "one"]
    found = json.loads(
        cli("audit-export", "--config", str(config), "--contains", "ECHO 2").stdout
    )
    assert sorted(r["seq"] for r in found) == [2, *range(20, 30)]
    by_regex = json.loads(
        cli("audit-export", "--config", str(config), "--regex", "^echo 1[0-2]$").stdout
    )
    assert [r["seq"] for r in by_regex] == [10, 11, 12]
    sessions = json.loads(
        cli("audit-sessions", "--config", str(config), "--format", "json").stdout
    )
    mine = [x for x in sessions if x["id"] == "one"]
    assert mine[0]["bastion"] == "b1" and mine[0]["command_count"] == 30
    # --local (or --data-dir) reads this bastion's own store.
    local_again = json.loads(
        cli("audit-export", "--config", str(config), "--local").stdout
    )
    assert local_again == local


def test_recordings_ship_in_chunks_and_come_back_whole(
    pg: PgServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    casts = data_dir / CASTS_DIR
    casts.mkdir(parents=True)
    header = json.dumps({"version": 2, "width": 80, "height": 24}) + "\n"
    body = "".join(
        json.dumps([i / 10, "o", f"line {i} " * 40]) + "\n" for i in range(3000)
    )
    cast = (header + body).encode()
    assert len(cast) > 2 * 256 * 1024  # three chunks and more
    (casts / "rec.cast").write_bytes(cast)
    CastState(size=len(cast), closed=True).save(casts / "rec.cast.state")
    fleet = fleet_for(pg, tmp_path, "b1")
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, fleet):
        store_commands(store, session("rec"), 2)
        wait_seqs(pg, "b1", "rec", 2)
        harness.wait_for(
            lambda: (
                pg.sql("SELECT sum(raw_bytes) FROM recordings WHERE session = 'rec'")[
                    0
                ][0]
                == len(cast)
            )
        )
    config = config_file(tmp_path, data_dir, fleet)
    out = tmp_path / "back.cast"
    result = cli(
        "audit-export", "--config", str(config), "--cast", "rec", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == cast
    stored = pg.sql("SELECT sum(length(data)) FROM recordings WHERE session = 'rec'")
    assert stored[0][0] < len(cast) / 2  # compressed
    # audit-replay reads it from the fleet store as audit-export does.
    fast = ("--speed", "1000", "--idle-limit", "0.01", "rec")
    local = cli("audit-replay", "--data-dir", str(data_dir), *fast)
    (casts / "rec.cast").unlink()  # the fleet's copy only, from here on
    played = cli("audit-replay", "--config", str(config), *fast)
    assert played.returncode == local.returncode == 0, played.stderr + local.stderr
    assert played.stdout == local.stdout and "line 2999" in played.stdout
    missing = cli("audit-replay", "--config", str(config), "nope")
    assert missing.returncode == 2 and "no session 'nope' in the fleet store" in (
        missing.stderr
    )


def test_a_cut_mid_transaction_loses_and_repeats_nothing(
    pg: PgServer, tmp_path: Path
) -> None:
    """The server ends the shipper's connection while its transaction waits."""
    data_dir = tmp_path / "data"
    fleet = fleet_for(pg, tmp_path, "b1", batch_size=50)
    with Store(data_dir / "store", 0.05) as store:
        s = store_commands(store, session("cut"), 10)
        with pg.connect(autocommit=False) as admin:
            admin.execute("LOCK TABLE commands IN EXCLUSIVE MODE")
            with Shipper(data_dir, fleet) as shipper:
                blocked = harness.wait_for(
                    lambda: pg.sql(
                        "SELECT pid FROM pg_stat_activity WHERE usename = 'agent_b1'"
                        " AND wait_event_type = 'Lock'"
                    )
                )
                pg.sql("SELECT pg_terminate_backend(%s)", (blocked[0][0],))
                admin.rollback()  # the lock goes
                harness.wait_for(lambda: shipper.snapshot().last_error is not None)
                assert shipper.snapshot().state in (
                    ShipState.UNREACHABLE,
                    ShipState.CAUGHT_UP,
                )
                assert "terminat" in (shipper.snapshot().last_error or "")
                s = store_commands(store, s, 10)
                wait_seqs(pg, "b1", "cut", 20)
    assert fleet_seqs(pg, "b1", "cut") == list(range(1, 21))


def test_a_backlog_goes_oldest_first_without_holding_up_a_live_session(
    pg: PgServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    store = Store(data_dir / "store", 0.05)  # no writer thread: flushed here
    store.open()
    for i in range(6):  # six sealed shards of 2,000, written while away
        store_commands(store, session(f"old{i}"), 2000, "backlog")
        store.flush()
    fleet = fleet_for(pg, tmp_path, "b2", batch_size=200)
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, fleet) as shipper:
        live = store_commands(store, session("live"), 3)
        wait_seqs(pg, "b2", "live", 3, timeout=60)
        behind = pg.sql("SELECT count(*) FROM commands WHERE bastion = 'b2'")[0][0]
        assert behind < 12_000 + 3  # the live session did not wait for it all
        # The lag is counted at most every SURVEY_INTERVAL_S while busy.
        harness.wait_for(lambda: shipper.snapshot().lag_records > 0, timeout=5)
        store_commands(store, live, 2)
        wait_seqs(pg, "b2", "live", 5, timeout=60)
        for i in range(6):
            wait_seqs(pg, "b2", f"old{i}", 2000, timeout=120)
        harness.wait_for(lambda: shipper.snapshot().lag_records == 0, timeout=30)
    # Oldest first: the sessions' commands arrived in the order they were stored.
    order = pg.sql(
        "SELECT session FROM commands WHERE bastion = 'b2' AND session LIKE 'old%%'"
        " GROUP BY session ORDER BY max(received_at), session"
    )
    assert [r[0] for r in order] == [f"old{i}" for i in range(6)]


def test_two_agents_with_one_bastion_id_are_refused_in_one_line(
    pg: PgServer, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    fleet = fleet_for(pg, tmp_path, "dup")
    with Store(first / "store", 0.05) as store, Shipper(first, fleet):
        store_commands(store, session("same", ssh_pid=1001), 2)
        wait_seqs(pg, "dup", "same", 2)
    with Store(second / "store", 0.05) as store, Shipper(second, fleet) as shipper:
        store_commands(store, session("same", ssh_pid=2002), 3, "other")
        harness.wait_for(lambda: shipper.snapshot().state == ShipState.BLOCKED)
        error = shipper.snapshot().last_error or ""
    assert "another session (ssh pid 1001" in error and "\n" not in error
    assert "two agents ship as bastion 'dup'" in error
    assert fleet_seqs(pg, "dup", "same") == [1, 2]
    assert len(harness.export(second)) == 3  # nothing lost locally
    assert pg.sql("SELECT command FROM commands WHERE bastion = 'dup'") == [
        ("echo 1",),
        ("echo 2",),
    ]


def test_refusals_are_one_line_and_lose_nothing_locally(
    pg: PgServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    wrong = fleet_for(pg, tmp_path, "b1", password_file=password_file(tmp_path, "nope"))
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, wrong) as shipper:
        store_commands(store, session("refused"), 4)
        harness.wait_for(lambda: shipper.snapshot().state == ShipState.BLOCKED)
        error = shipper.snapshot().last_error or ""
    assert 'password authentication failed for user "agent_b1"' in error
    assert len(harness.export(data_dir)) == 4
    config = config_file(tmp_path, data_dir, wrong)
    result = cli("audit-export", "--config", str(config))
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1
        and "password authentication failed" in result.stderr
    )
    bad = cli(
        "audit-export",
        "--database",
        "host=127.0.0.1 port=x=y",
        "--data-dir",
        str(data_dir),
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    with_password = tmp_path / "pw.toml"
    with_password.write_text('[fleet]\ndatabase = "postgresql://u:secret@h/db"\n')
    result = cli("audit-export", "--config", str(with_password))
    assert result.returncode == 2 and "holds a password" in result.stderr
    assert "secret" not in result.stderr
    # The database is away: a transient problem, the local store keeps it all.
    away = fleet_for(
        pg,
        tmp_path,
        "b1",
        database=f"postgresql://agent_b1@127.0.0.1:{harness.free_port()}/audit",
    )
    elsewhere = tmp_path / "elsewhere"
    with Store(elsewhere / "store", 0.05) as store, Shipper(elsewhere, away) as shipper:
        store_commands(store, session("away"), 2)
        harness.wait_for(lambda: shipper.snapshot().lag_records == 2)
        assert shipper.snapshot().state == ShipState.UNREACHABLE
        assert "Connection refused" in (shipper.snapshot().last_error or "")


def test_an_older_schema_is_refused_by_the_shipper_and_the_readers(
    pg: PgServer, tmp_path: Path
) -> None:
    with pg.connect() as conn:
        conn.execute("CREATE DATABASE old_schema")
    with psycopg.connect(
        host=str(pg.root), port=pg.port, user=pg.owner, dbname="old_schema"
    ) as conn:
        migrate(conn, upto=1)
    dsn = pg.dsn(database="old_schema")
    fleet = FleetConfig(
        database=dsn,
        password_file=password_file(tmp_path, pg.password),
        bastion="b1",
        retry_interval_s=0.2,
    )
    data_dir = tmp_path / "data"
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, fleet) as shipper:
        store_commands(store, session("old"), 1)
        harness.wait_for(lambda: shipper.snapshot().state == ShipState.BLOCKED)
        error = shipper.snapshot().last_error or ""
    assert (
        "schema version 1, older than this agent's 3: run audit-agent fleet-init"
        in error
    )
    config = config_file(tmp_path, data_dir, fleet)
    result = cli("audit-sessions", "--config", str(config))
    assert result.returncode == 2 and "older than this agent's 3" in result.stderr


def test_row_level_security_keeps_each_agent_to_its_own_bastion(
    pg: PgServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with (
        Store(data_dir / "store", 0.05) as store,
        Shipper(data_dir, fleet_for(pg, tmp_path, "b2")),
    ):
        store_commands(store, session("b2only"), 1)
        wait_seqs(pg, "b2", "b2only", 1)

    def as_role(role: str, password: str) -> psycopg.Connection:
        return psycopg.connect(pg.dsn(role), password=password, autocommit=True)

    with as_role("agent_b1", AGENT_PASSWORD) as conn:
        assert conn.execute(
            "SELECT count(*) FROM sessions WHERE bastion = 'b2'"
        ).fetchone() == (0,)
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="row-level security"
        ):
            conn.execute(
                "INSERT INTO commands (bastion, session, seq, time, command)"
                " VALUES ('b2', 'b2only', 99, now(), 'forged')"
            )
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="row-level security"
        ):
            conn.execute("INSERT INTO bastions (id, name) VALUES ('b3', 'forged')")
        updated = conn.execute(
            "UPDATE commands SET command = 'changed' WHERE bastion = 'b2'"
        )
        assert updated.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM commands WHERE bastion = 'b1'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE fleet_agents SET bastion = 'b2'")
        # The auditors' view and sample pass by row-level security: not an agent's.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM auditor_commands")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM auditor_command_sample()")
    pg.sql("ANALYZE commands")
    with as_role("alice", "auditor-secret") as conn:
        for relation in ("commands", "auditor_commands"):
            assert conn.execute(
                f"SELECT command FROM {relation}"
                " WHERE bastion = 'b2' AND session = 'b2only'"
            ).fetchall() == [("echo 1",)]
        # pg_stats hides the column under row-level security; the sample has it.
        stats = "SELECT null_frac FROM pg_stats WHERE attname = 'command'"
        assert conn.execute(stats).fetchall() == []
        sample = "SELECT null_share FROM auditor_command_sample()"
        assert conn.execute(sample).fetchall() == [(0.0,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE commands SET command = 'changed'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE auditor_commands SET command = 'changed'")
    assert pg.sql("SELECT command FROM commands WHERE session = 'b2only'") == [
        ("echo 1",)
    ]


def test_audit_tail_follows_the_fleet(pg: PgServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fleet = fleet_for(pg, tmp_path, "b1")
    config = config_file(tmp_path, data_dir, fleet)
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, fleet):
        s = store_commands(store, session("tailed"), 2)
        wait_seqs(pg, "b1", "tailed", 2)
        tail = subprocess.Popen(
            [
                str(harness.BIN / "audit-tail"),
                "--config",
                str(config),
                "--json",
                "--bastion",
                "b1",
                "--session",
                "tailed",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            lines = harness.LineReader(tail.stdout)
            first = [json.loads(lines.readline(20)) for _ in range(2)]
            store_commands(store, s, 1, "later")
            later = json.loads(lines.readline(20))
        finally:
            tail.terminate()
            tail.wait(10)
    assert [r["seq"] for r in first] == [1, 2] and later["command"] == "later 3"
    assert later["bastion"] == "b1"
