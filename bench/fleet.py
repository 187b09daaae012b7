"""The fleet store: 10 bastions' worth of commands through the real shipping code.

    sudo .venv/bin/python -m bench.fleet [--bastions 10] [--rate 1000]
        [--seconds 30] [--backlog 1000000] [--queries 50]

Starts a PostgreSQL 15 of its own (tests/pg_harness.py), one agent role per
bastion, and for each bastion a real store writer (agent/daemon/store.py)
and a real Shipper (agent/daemon/shipper.py) in this process. Synthetic
commands go into the stores; the shippers take them from the shards as
they do in the agent. It prints, side by side:

- lag at a steady fleet-wide rate (default 1,000 commands/s): from the
  command's time to its row's `received_at` (the shipping transaction's
  start), p50 and p95;
- sustained commands/s: the stores fed as fast as one process can;
- catch-up: a backlog of `--backlog` commands written while the database
  was away, shipped from the moment the shippers start;
- search: a case-insensitive substring over the backlog's commands, p50
  and p95 of the fleet reader (pg_trgm) beside the local reader (the
  shards loaded once, then scanned).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import tempfile
import time
from pathlib import Path

from agent.daemon.shipper import Shipper
from agent.daemon.store import SHARD_MAX_COMMANDS, Store
from agent.fleet_config import FleetConfig
from agent.fleet_reader import FleetReader
from agent.local_reader import LocalReader
from agent.reading import Selection
from agent.records import Command, Session, iso
from tests.pg_harness import PgServer, postgres

PASSWORD = "bench-agent"
VERBS = ("cat", "tail -n 50", "grep -i error", "less", "systemctl status", "ls -la")


def command_text(n: int) -> str:
    return f"{VERBS[n % len(VERBS)]} /srv/app{n % 997}/log/file{n}.log # {n:x}"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Bastion:
    def __init__(self, pg: PgServer, root: Path, name: str, batch: int) -> None:
        self.name = name
        self.data_dir = root / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir / "store", 0.2)
        password = root / f"{name}.password"
        password.write_text(PASSWORD)
        password.chmod(0o600)
        self.fleet = FleetConfig(
            database=pg.dsn(f"agent_{name}"),
            password_file=password,
            bastion=name,
            batch_size=batch,
            retry_interval_s=0.5,
        )
        self.sessions: dict[str, Session] = {}

    def session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = Session(
                id=sid,
                tag=sid,
                bastion_user="root",
                remote_user="ops",
                host=f"app{len(self.sessions)}",
                port=22,
                ssh_pid=10_000 + len(self.sessions),
                tty="/dev/pts/1",
                started_at=time.time(),
            )
        return s

    def submit(self, sid: str, texts: list[str]) -> None:
        s = self.session(sid)
        commands = []
        for text in texts:
            s = s.counted()
            commands.append(Command(sid, s.command_count, iso(time.time()), text))
        self.sessions[sid] = s
        self.store.submit(s, commands)


def fleet_count(pg: PgServer) -> int:
    return int(pg.sql("SELECT count(*) FROM commands")[0][0])


def steady(pg: PgServer, bastions: list[Bastion], rate: float, seconds: float) -> None:
    """Commands at `rate`/s fleet-wide; the lag of each, from the database."""
    start_count = fleet_count(pg)
    step = 0.05  # seconds between two submissions of every bastion
    per = rate * step / len(bastions)
    owed = [0.0] * len(bastions)
    n = 0
    begin = time.monotonic()
    while time.monotonic() - begin < seconds:
        for i, b in enumerate(bastions):
            owed[i] += per
            k = int(owed[i])
            owed[i] -= k
            if k:
                b.submit("steady", [command_text(n + j) for j in range(k)])
                n += k
        time.sleep(max(0.0, begin + n / rate - time.monotonic()))
    deadline = time.monotonic() + 60
    while fleet_count(pg) < start_count + n and time.monotonic() < deadline:
        time.sleep(0.1)
    lags = [
        float(r[0])
        for r in pg.sql(
            "SELECT extract(epoch FROM received_at - time) FROM commands"
            " WHERE session = 'steady'"
        )
    ]
    print(
        f"steady {rate:.0f} commands/s fleet-wide for {seconds:.0f}s: {n} commands, "
        f"{len(lags)} shipped; lag p50 {percentile(lags, 0.5):.3f}s, "
        f"p95 {percentile(lags, 0.95):.3f}s, max {max(lags):.3f}s (goal p95 <= 1 s)"
    )


def sustained(pg: PgServer, bastions: list[Bastion], seconds: float) -> None:
    start_count = fleet_count(pg)
    n = 0
    begin = time.monotonic()
    while time.monotonic() - begin < seconds:
        for b in bastions:
            b.submit("flood", [command_text(n + j) for j in range(200)])
            n += 200
        time.sleep(0.01)
    fed_s = time.monotonic() - begin
    while fleet_count(pg) < start_count + n:
        time.sleep(0.05)
    took = time.monotonic() - begin
    print(
        f"sustained: {n} commands fed in {fed_s:.1f}s ({n / fed_s:.0f}/s), all in the "
        f"fleet store after {took:.1f}s: {n / took:.0f} commands/s shipped"
    )


def write_backlog(bastions: list[Bastion], total: int) -> None:
    """`total` commands into the stores, no shipper running (the database away)."""
    per = total // len(bastions)
    begin = time.monotonic()
    n = 0
    for b in bastions:
        b.store.open()
        for chunk in range(0, per, SHARD_MAX_COMMANDS):
            sid = f"backlog{chunk // (per // 10 or 1)}"
            k = min(SHARD_MAX_COMMANDS, per - chunk)
            b.submit(sid, [command_text(n + j) for j in range(k)])
            n += k
            b.store.flush()
    print(
        f"backlog: {n} commands written into {len(bastions)} local stores in "
        f"{time.monotonic() - begin:.1f}s"
    )


def search(pg: PgServer, bastions: list[Bastion], queries: int, total: int) -> None:
    needles = [f"file{secrets.randbelow(total)}." for _ in range(queries)]
    admin = FleetConfig(password_file=bastions[0].fleet.password_file)
    reader = FleetReader(pg.dsn("auditor"), admin)
    fleet_ms = []
    hits = 0
    for needle in needles:
        t = time.monotonic()
        hits += len(list(reader.commands(Selection(contains=needle), limit=100)))
        fleet_ms.append((time.monotonic() - t) * 1000)
    reader.close()
    t = time.monotonic()
    locals_ = [LocalReader(b.data_dir) for b in bastions]
    for r in locals_:
        r.snapshot  # noqa: B018 (loads the shards)
    load_s = time.monotonic() - t
    local_ms = []
    for needle in needles:
        t = time.monotonic()
        for r in locals_:
            list(r.commands(Selection(contains=needle), limit=100))
        local_ms.append((time.monotonic() - t) * 1000)
    print(
        f"search of {total} commands, {queries} substrings ({hits} hits): fleet p50 "
        f"{percentile(fleet_ms, 0.5):.1f} ms, p95 {percentile(fleet_ms, 0.95):.1f} ms "
        f"(goal <= 200 ms); local p50 {percentile(local_ms, 0.5):.1f} ms, p95 "
        f"{percentile(local_ms, 0.95):.1f} ms after loading the shards once in "
        f"{load_s:.1f}s; fleet/local p95 "
        f"{percentile(fleet_ms, 0.95) / percentile(local_ms, 0.95):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bastions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        from agent.fleet_schema import migrate

        with pg.connect() as conn:
            migrate(conn)
        names = [f"b{i:02d}" for i in range(args.bastions)]
        for name in names:
            pg.add_agent_role(f"agent_{name}", PASSWORD, name)
        pg.add_auditor_role("auditor", PASSWORD)
        live = [Bastion(pg, Path(tmp) / "live", n, args.batch) for n in names]
        with contextlib.ExitStack() as stack:
            for b in live:
                stack.enter_context(b.store)
                stack.enter_context(Shipper(b.data_dir, b.fleet)).follow(b.store)
            steady(pg, live, args.rate, args.seconds)
            sustained(pg, live, min(args.seconds, 20.0))
        pg.sql("TRUNCATE commands, recordings, sessions CASCADE")
        backlog = [Bastion(pg, Path(tmp) / "backlog", n, args.batch) for n in names]
        write_backlog(backlog, args.backlog)
        for b in backlog:
            b.store = Store(b.data_dir / "store", 0.2)
        begin = time.monotonic()
        with contextlib.ExitStack() as stack:
            shippers = [
                stack.enter_context(Shipper(b.data_dir, b.fleet)) for b in backlog
            ]
            total = args.backlog // len(backlog) * len(backlog)
            while fleet_count(pg) < total:
                time.sleep(0.5)
            took = time.monotonic() - begin
            print(
                f"catch-up: {total} commands shipped in {took:.1f}s "
                f"({total / took:.0f} commands/s; {len(shippers)} shippers)"
            )
        pg.sql("ANALYZE commands")
        search(pg, backlog, args.queries, total)


if __name__ == "__main__":
    main()
