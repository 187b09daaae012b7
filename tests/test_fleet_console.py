"""The console's fleet backend and the access log's shipping, on a real PostgreSQL 15.

Two bastions' stores are written by the real store writer and shipped by
the real Shipper (tests/test_fleet.py's helpers); the console reads them as
audit-web does (web/console_fleet.py), as a role of the auditor group. The
access-log entries are numbered by the store as the control socket has it
do (Store.submit_access) and must reach the fleet's access_log once each,
in order, whatever the shipper's cursor says.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.access_log import AccessEntry, Action
from agent.casts import CASTS_DIR
from agent.daemon import store as store_module
from agent.daemon.cast_state import CastState
from agent.daemon.fleet_source import CURSOR_FILE
from agent.daemon.shipper import Shipper
from agent.daemon.store import Store
from agent.fleet_schema import migrate
from agent.records import Command, iso
from agent.web_config import WebFleet
from tests import harness
from tests.pg_harness import PgServer, postgres
from tests.test_fleet import AGENT_PASSWORD, fleet_for, password_file, session
from web import console_fleet
from web.console_fleet import FleetConsole
from web.console_store import Search, SearchError, SessionFilter, StoreUnavailable

pytestmark = [pytest.mark.root, pytest.mark.slow]

READER_PASSWORD = "console-reader-pw"
T0 = 1_800_000_000.0
NEEDLE_B1 = "grep -r needle /etc"
NEEDLE_B2 = "GREP NEEDLE /var/log"
HOSTILE = "echo '<img src=x onerror=alert(1)>'"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with postgres() as server:
        with server.connect(autocommit=False) as conn:
            migrate(conn)
        for b in ("b1", "b2", "b3", "b4"):
            server.add_agent_role(f"agent_{b}", AGENT_PASSWORD, b)
        server.add_auditor_role("console_reader", READER_PASSWORD)
        yield server


def entry(
    actor: str, action: Action, sid: str | None = None, ok: bool = True
) -> AccessEntry:
    return AccessEntry(
        0, "", actor, "auditor", action, sid, f"{action} by {actor}", "10.0.0.9", ok
    )


def fleet_access(pg: PgServer, bastion: str) -> list[tuple[int, str, str | None, dict]]:
    rows = pg.sql(
        "SELECT seq, action, target, detail FROM access_log WHERE bastion = %s"
        " ORDER BY seq",
        (bastion,),
    )
    return [(seq, action, target, detail) for seq, action, target, detail in rows]


def test_access_entries_ship_once_each_in_order_through_restarts(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SHARD_MAX_COMMANDS", 4)  # a few shards
    data_dir = tmp_path / "data"
    fleet = fleet_for(pg, tmp_path, "b3")
    cursor = data_dir / CURSOR_FILE
    store = Store(data_dir / "store", 0.05)  # flushed here, an entry a write
    store.open()

    def log(e: AccessEntry) -> None:
        store.submit_access(e)
        store.flush()

    with Shipper(data_dir, fleet):
        for n in range(6):
            log(entry("alice", Action.VIEW, f"s{n}"))
        log(entry("bob", Action.TERMINATE, "s9", ok=False))
        harness.wait_for(lambda: len(fleet_access(pg, "b3")) == 7, timeout=30)
    assert len(list((data_dir / "store").glob("*.json"))) == 2  # entries fill shards
    # The cursor said less than was shipped (a crash before its save): the
    # same entries go again, and nothing is written twice.
    doc = json.loads(cursor.read_text())
    assert doc["v"] == 2 and doc["access"] == 7
    cursor.write_text(json.dumps({**doc, "access": 2, "shard": 1, "doc": 0}))
    with Shipper(data_dir, fleet):
        log(entry("carol", Action.SEARCH))
        harness.wait_for(lambda: len(fleet_access(pg, "b3")) == 8, timeout=30)
    # A cursor of the agent before the access log shipped (version 1, at its
    # last shard) ships the store again: the older shards' entries too.
    pg.sql("DELETE FROM access_log WHERE bastion = 'b3' AND seq < 5")
    doc = json.loads(cursor.read_text())
    assert doc["shard"] == 2
    del doc["access"]
    cursor.write_text(json.dumps({**doc, "v": 1}))
    with Shipper(data_dir, fleet) as shipper:
        harness.wait_for(lambda: len(fleet_access(pg, "b3")) == 8, timeout=30)
        harness.wait_for(lambda: shipper.snapshot().state == "caught up")
    store.stop()
    shipped = fleet_access(pg, "b3")
    assert [seq for seq, *_ in shipped] == list(range(1, 9))
    seq, action, target, detail = shipped[6]
    assert (action, target) == ("terminate", "s9")
    assert detail == {
        "role": "auditor",
        "detail": "terminate by bob",
        "client": "10.0.0.9",
        "ok": False,
    }
    assert shipped[7][2] is None  # a search names no session


def fill(
    pg: PgServer, tmp_path: Path, bastion: str, plan: list[tuple[str, str, list[str]]]
) -> Path:
    """Sessions (id, bastion user, commands) stored, shipped and closed."""
    data_dir = tmp_path / bastion
    fleet = fleet_for(pg, tmp_path, bastion)
    with Store(data_dir / "store", 0.05) as store, Shipper(data_dir, fleet) as shipper:
        for n, (sid, user, texts) in enumerate(plan):
            s = dataclasses.replace(
                session(sid),
                bastion_user=user,
                started_at=T0 + n * 100 + (10 if bastion == "b2" else 0),
                command_count=len(texts),
            )
            cmds = [
                Command(s.id, k + 1, iso(s.started_at + k + 1), text)
                for k, text in enumerate(texts)
            ]
            store.submit(s.ended(s.started_at + 50, "ssh exited with 0"), cmds)
        store.submit_access(entry("alice", Action.VIEW, f"{bastion}/one"))
        if bastion == "b1":
            casts = data_dir / CASTS_DIR
            casts.mkdir(parents=True)
            header = json.dumps({"version": 2, "width": 80, "height": 24}) + "\n"
            body = "".join(
                json.dumps([i, "o", f"out {i}\r\n"]) + "\n" for i in range(5)
            )
            (casts / "one.cast").write_bytes((header + body).encode())
            state = CastState(size=len(header + body), closed=True)
            state.save(casts / "one.cast.state")
        harness.wait_for(
            lambda: (
                shipper.snapshot().lag_records == 0
                and pg.sql(
                    "SELECT count(*) FROM access_log WHERE bastion = %s", (bastion,)
                )[0][0]
                == 1
                and (
                    bastion != "b1"
                    or pg.sql("SELECT count(*) FROM recordings WHERE bastion = 'b1'")[
                        0
                    ][0]
                )
            ),
            timeout=30,
        )
    return data_dir


@pytest.fixture(scope="module")
def console(
    pg: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetConsole]:
    tmp = tmp_path_factory.mktemp("fleet-console")
    fill(
        pg,
        tmp,
        "b1",
        [
            ("one", "alice", ["ls /srv", NEEDLE_B1, HOSTILE]),
            ("two", "bob", ["uptime", "rm -rf /tmp/x"]),
        ],
    )
    fill(pg, tmp, "b2", [("one", "alice", [NEEDLE_B2, "df -h"])])
    reader = FleetConsole(
        WebFleet(
            database=pg.dsn("console_reader"),
            password_file=password_file(tmp, READER_PASSWORD),
        )
    )
    yield reader
    reader.close()


def keys(page: console_fleet.Page) -> list[tuple[str | None, str]]:
    return [(s.bastion, s.id) for s in page.items]


def test_sessions_newest_first_counted_and_filtered_per_bastion(
    console: FleetConsole,
) -> None:
    everyone = console.session_page(SessionFilter(), 0, 50)
    assert keys(everyone) == [("b1", "two"), ("b2", "one"), ("b1", "one")]
    assert everyone.total == 3
    second = console.session_page(SessionFilter(), 1, 1)
    assert keys(second) == [("b2", "one")] and second.total == 3
    assert second.next_offset == 2 and second.previous_offset == 0
    assert keys(console.session_page(SessionFilter(bastion="b2"), 0, 50)) == [
        ("b2", "one")
    ]
    having = console.session_page(SessionFilter(text="NEEDLE"), 0, 50)
    assert keys(having) == [("b2", "one"), ("b1", "one")]
    # A person who is not an auditor: their own sessions, of this bastion only
    # (alice of b2 may be another alice).
    mine = SessionFilter(owner="alice", owner_bastion="b1")
    assert keys(console.session_page(mine, 0, 50)) == [("b1", "one")]
    theirs = dataclasses.replace(mine, bastion="b2")
    assert console.session_page(theirs, 0, 50).total == 0
    assert (
        console.session_page(
            SessionFilter(owner="alice", owner_bastion="b1", bastion_user="bob"), 0, 50
        ).total
        == 0
    )
    assert console.session_page(SessionFilter(status="live"), 0, 50).total == 0


def test_a_session_is_its_bastion_and_its_id(console: FleetConsole) -> None:
    b1, b2 = console.session("one", "b1"), console.session("one", "b2")
    assert b1 is not None and b2 is not None and b1.bastion == "b1"
    assert console.session("one") is None  # the fleet's sessions name their bastion
    assert console.session("nothing", "b1") is None
    assert [c.command for c in console.session_commands(b1)] == [
        "ls /srv",
        NEEDLE_B1,
        HOSTILE,
    ]
    assert [c.seq for c in console.session_commands(b1, after=2)] == [3]
    assert [c.command for c in console.session_commands(b2)] == [NEEDLE_B2, "df -h"]
    cast = console.recording(b1)
    assert cast.startswith(b'{"version": 2') and cast.count(b"\n") == 6
    assert console.recording_since(b1, 10, 20) == cast[10:30]
    assert console.recording_since(b1, len(cast), 100) == b""


def test_search_text_and_regex_across_bastions_newest_first(
    console: FleetConsole, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = console.search(Search("needle"), 0, 50)
    found = [
        (h.session.bastion if h.session else None, h.command.command)
        for h in page.items
    ]
    assert found == [("b2", NEEDLE_B2), ("b1", NEEDLE_B1)]
    assert page.total == 2 and not page.more and not page.stopped
    assert [
        h.command.command
        for h in console.search(Search("needle", bastion="b1"), 0, 50).items
    ] == [NEEDLE_B1]
    mine = console.search(Search("needle", owner="alice", owner_bastion="b2"), 0, 50)
    assert [h.command.command for h in mine.items] == [NEEDLE_B2]
    assert (
        console.search(Search("needle", owner="bob", owner_bastion="b1"), 0, 50).total
        == 0
    )
    # A percent sign or an underscore is itself, not a wildcard.
    assert console.search(Search("r_-rf"), 0, 50).total == 0
    # PostgreSQL's POSIX regular expressions, case-sensitive; a class of its own.
    regex = console.search(Search("^grep -r [a-z]+ /etc$", regex=True), 0, 50)
    assert [h.command.command for h in regex.items] == [NEEDLE_B1]
    upper = console.search(Search("[[:upper:]]{6}", regex=True), 0, 50)
    assert [h.command.command for h in upper.items] == [NEEDLE_B2]
    words = console.search(Search(r"\mNEEDLE\M", regex=True), 0, 50)  # not Python's
    assert [h.command.command for h in words.items] == [NEEDLE_B2]
    with pytest.raises(SearchError, match="regular expression"):
        console.search(Search("(unclosed", regex=True), 0, 50)
    with pytest.raises(SearchError):
        console.search(Search(""), 0, 50)
    # A count stops at its bound and says there are more.
    every = console.search(Search("e"), 0, 50)
    assert not every.more and every.total == 4
    monkeypatch.setattr(console_fleet, "COUNT_MAX", 1)
    capped = console.search(Search("e"), 0, 2)  # found by walking back in time
    assert capped.more and capped.total == 2 and capped.next_offset == 2
    assert [h.command for h in capped.items] == [h.command for h in every.items[:2]]
    deeper = console.search(Search("e", bastion="b1"), 2, 2)
    assert [h.command for h in deeper.items] == [
        h.command for h in every.items if h.session and h.session.bastion == "b1"
    ][2:4]


def test_the_access_log_of_every_bastion(console: FleetConsole) -> None:
    page = console.access_page(0, 50)
    ours = [e for e in page.items if e.bastion in ("b1", "b2")]
    assert {(e.bastion, e.session) for e in ours} == {
        ("b1", "b1/one"),
        ("b2", "b2/one"),
    }
    assert all(
        e.actor == "alice" and e.role == "auditor" and e.client == "10.0.0.9"
        for e in ours
    )
    times = [e.time for e in page.items]
    assert times == sorted(times, reverse=True) and page.total == len(page.items)


def test_a_search_past_its_time_limit_stops_and_says_so(
    pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.sql("INSERT INTO bastions (id, name) VALUES ('b4', 'bulk')")
    pg.sql(
        "INSERT INTO sessions (bastion, id, tag, bastion_user, ssh_pid, tty,"
        " started_at, status, state_shard, state_mtime_ns)"
        " VALUES ('b4', 'bulk', 'bulk', 'root', 1, '/dev/pts/1', now(), 'closed', 1, 1)"
    )
    pg.sql(
        "INSERT INTO commands (bastion, session, seq, time, command)"
        " SELECT 'b4', 'bulk', n, now(), 'echo ' || md5(n::text) || md5(n::text)"
        " FROM generate_series(1, 300000) n"
    )
    monkeypatch.setattr(console_fleet, "SEARCH_DEADLINE_S", 0.01)
    quick = FleetConsole(
        WebFleet(
            database=pg.dsn("console_reader"),
            password_file=password_file(tmp_path, READER_PASSWORD),
        )
    )
    try:
        started = time.monotonic()
        page = quick.search(Search("(a|b)*c(d|e)*f[0-9]{3}z$", regex=True), 0, 50)
        assert page.stopped and page.items == []
        assert time.monotonic() - started < 5.0
        # The connection is still good for the next request.
        assert quick.session("bulk", "b4") is not None
    finally:
        quick.close()


def test_a_role_that_may_write_is_refused(pg: PgServer, tmp_path: Path) -> None:
    writer = FleetConsole(
        WebFleet(
            database=pg.dsn("agent_b1"),
            password_file=password_file(tmp_path, AGENT_PASSWORD),
        )
    )
    with pytest.raises(StoreUnavailable, match="may write the fleet store"):
        writer.session_page(SessionFilter(), 0, 10)


def test_a_database_gone_and_back(pg: PgServer, console: FleetConsole) -> None:
    assert console.session_page(SessionFilter(), 0, 1).total >= 3  # pooled now
    pg.stop()
    try:
        with pytest.raises(StoreUnavailable, match="fleet database"):
            console.session_page(SessionFilter(), 0, 1)
    finally:
        pg.start()
    harness.wait_for(
        lambda: console.session_page(SessionFilter(bastion="b1"), 0, 1).total == 2,
        timeout=30,
    )
