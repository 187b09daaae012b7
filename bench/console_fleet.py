"""The console over the fleet store: its pages over 1,000,000 commands (bench/console.py).

A PostgreSQL 15 of its own (tests/pg_harness.py), filled through the
shipper's own writes (agent/daemon/fleet_rows.py: register_bastion,
upsert_sessions, insert_commands) with the same synthetic sessions as the
local part, spread over 10 bastions, then analysed (as autovacuum would).
audit-web's real views then read it through web/console_fleet.py as a role
of the auditor group, each page ROUNDS times, as the local part does.
Goal (issue 18): p95 <= 200 ms on the 2-core VM.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.daemon.fleet_rows import (
    SessionState,
    insert_commands,
    register_bastion,
    upsert_sessions,
)
from agent.fleet_schema import migrate
from agent.records import Command, iso
from agent.web_config import WebFleet
from tests.pg_harness import PgServer, postgres

BASTIONS = 10
READER_PASSWORD = "bench-console-reader"
SESSIONS_PER_COMMIT = 50
PAGES = (
    ("sessions", "/sessions"),
    ("sessions, filtered by user and host", "/sessions?bastion_user=u3&host=db7"),
    ("sessions of one bastion", "/sessions?bastion=b3"),
    ("sessions, page 100", "/sessions?offset=4950"),
    ("sessions having a command", "/sessions?text=needle-4242"),
    ("search, text (rare)", "/search?q=needle-4242"),
    ("search, text (every 7th)", "/search?q=systemctl"),
    ("search, text (every 7th), page 20", "/search?q=systemctl&offset=950"),
    ("search, regex (no match)", "/search?q=grep%20-r%20/srv/[0-9]%2B1%24&mode=regex"),
    (
        "search, regex (every 70th)",
        "/search?q=grep%20-r%20/srv/[0-9]%2B/data[0-9]*1%24&mode=regex",
    ),
    ("session page", "/bastions/b7/sessions/bench7"),
    ("access log", "/access"),
)

# bench/console.py's synthetic sessions and commands, and how to time a page.
Sessions = Callable[[int, float], Any]
Texts = Callable[[int], str]


def fill(
    pg: PgServer, total: int, t0: float, session: Sessions, text: Texts, per: int
) -> float:
    """`total` commands, `per` a session, session n on bastion b{n % 10}; seconds."""
    started = time.perf_counter()
    with pg.connect(autocommit=False) as conn:
        cur = conn.cursor()
        for b in range(BASTIONS):
            register_bastion(cur, f"b{b}", f"bastion-{b}")
        written, sid = 0, 0
        while written < total:
            states: list[list[SessionState]] = [[] for _ in range(BASTIONS)]
            commands: list[list[Command]] = [[] for _ in range(BASTIONS)]
            for _ in range(SESSIONS_PER_COMMIT):
                if written >= total:
                    break
                s = session(sid, t0)
                n = min(per, total - written)
                commands[sid % BASTIONS] += [
                    Command(s.id, k + 1, iso(s.started_at + k), text(written + k))
                    for k in range(n)
                ]
                s = dataclasses.replace(s, command_count=n).ended(
                    s.started_at + n, "ssh exited with 0"
                )
                states[sid % BASTIONS].append(SessionState(s, 1, 1))
                written += n
                sid += 1
            for b in range(BASTIONS):  # as each bastion's shipper would
                upsert_sessions(cur, f"b{b}", states[b])
                insert_commands(cur, f"b{b}", commands[b])
            conn.commit()
    with pg.connect() as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


@contextmanager
def fleet_store(
    workdir: Path, total: int, t0: float, session: Sessions, text: Texts, per: int
) -> Iterator[WebFleet]:
    """The filled fleet store, and the console's [web.fleet] settings for it."""
    with postgres() as pg:
        with pg.connect(autocommit=False) as conn:
            migrate(conn)
        pg.add_auditor_role("console", READER_PASSWORD)
        took = fill(pg, total, t0, session, text, per)
        size = pg.sql("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(
            f"fleet store: {total} commands of {BASTIONS} bastions, written through "
            f"the shipper's writes in {took:.1f} s (with VACUUM ANALYZE), {size[0][0]}"
        )
        password = workdir / "fleet.password"
        password.write_text(READER_PASSWORD + "\n")
        password.chmod(0o600)
        yield WebFleet(database=pg.dsn("console"), password_file=password)


def use_fleet(settings: WebFleet) -> None:
    """audit-web's console, from now on over the fleet store (the views read it)."""
    from django.conf import settings as django_settings

    from web.console_fleet import FleetConsole

    console = django_settings.BASTION_CONSOLE
    django_settings.BASTION_CONSOLE = dataclasses.replace(
        console, reader=FleetConsole(settings), home="b0"
    )
