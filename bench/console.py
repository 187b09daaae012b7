"""The console's speed: session list and command search over a store of 100,000 commands.

A synthetic store is written through the real store code (Store.submit and
its atomic flushes), the agent's real control socket takes every access-log
entry, and audit-web's real Django views answer through Django's test client
(no browser, no network: the page's work, rendering included). Each page is
asked ROUNDS times with the store at rest, then again while a writer adds
commands to the newest shard (as a busy bastion does: the console reads
that shard again at each request). Goal (issue 18): p95 <= 1 s on the 2-core
VM. Then the same console over a fleet store of 1,000,000 commands of 10
bastions (bench/console_fleet.py; goal p95 <= 200 ms), side by side.

    sudo .venv/bin/python -m bench.console [--commands 100000] [--rounds 30]
        [--fleet-commands 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.daemon.control import Controller, ControlServer
from agent.daemon.store import Store
from agent.records import Command, Session, iso
from parsers.events import Checkpoint
from tracer.session_log import SessionStart

COMMANDS_PER_SESSION = 100
BATCH = 500
WORDS = ("ls -l", "grep -r", "systemctl status", "tail -f", "cat", "vi", "du -sh")
PAGES = (
    ("sessions", "/sessions"),
    ("sessions, filtered by user and host", "/sessions?bastion_user=u3&host=db7"),
    ("sessions having a command", "/sessions?text=needle-4242"),
    ("search, text (rare)", "/search?q=needle-4242"),
    ("search, text (every 7th)", "/search?q=systemctl"),
    ("search, regex", "/search?q=grep%20-r%20/srv/[0-9]%2B1%24&mode=regex"),
    ("session page", "/sessions/bench7"),
)


def session(n: int, t0: float) -> Session:
    start = SessionStart(
        tag=f"bench{n}",
        ssh_pid=10_000 + n,
        start_ticks=n,
        started_at=t0 + n * COMMANDS_PER_SESSION,
        uid=1000,
        user=f"u{n % 10}",
        tty="/dev/pts/3",
        argv=("ssh", f"bob@db{n % 13}"),
    )
    return Session.new(f"bench{n}", start, f"bench{n}.strace")


def command_text(i: int) -> str:
    if i % 10_000 == 4242:
        return f"echo needle-4242 {i}"
    return f"{WORDS[i % len(WORDS)]} /srv/{i % 97}/data{i}"


def fill(store: Store, total: int, t0: float) -> None:
    written = 0
    sid = 0
    while written < total:
        s = session(sid, t0)
        cmds = [
            Command(s.id, k + 1, iso(s.started_at + k), command_text(written + k))
            for k in range(min(COMMANDS_PER_SESSION, total - written))
        ]
        s = dataclasses.replace(
            s,
            command_count=len(cmds),
            checkpoint=Checkpoint(0, 0, 24, 80, True, "$ "),
        ).ended(s.started_at + len(cmds), "ssh exited with 0")
        store.submit(s, cmds)
        written += len(cmds)
        sid += 1
        if sid % (BATCH // COMMANDS_PER_SESSION or 1) == 0:
            store.flush()
    store.flush()


def configure(workdir: Path, data_dir: Path, control: Path) -> Any:
    """Django as audit-web configures it; a client signed in as root (an auditor)."""
    from django.test import Client

    from agent.web_config import load_web_config
    from web.site import wsgi_application
    from web.tokens import TokenStore

    agent_toml = workdir / "agent.toml"
    agent_toml.write_text(f'data_dir = "{data_dir}"\ncontrol_socket = "{control}"\n')
    shell_toml = workdir / "shell.toml"
    shell_toml.write_text(
        f'[shell]\nintents_dir = "{workdir}"\n'
        f'[web]\nstate_dir = "{workdir}"\nterminal_user = "root"\n'
        f'agent_config = "{agent_toml}"\nauditor_group = "root"\n'
        'allowed_hosts = ["testserver"]\n'
    )
    wsgi_application(load_web_config(shell_toml), TokenStore(workdir / "t.sqlite"))
    from django.contrib.sessions.backends.file import SessionStore

    signed = SessionStore()
    signed["user"], signed["since"] = "root", time.time()
    signed.create()
    client = Client()
    client.cookies["audit_web_session"] = signed.session_key
    return client


def timed(client: Any, url: str, rounds: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    response = client.get(url)
    first = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
    return first, times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20, method="inclusive")[-1]


def report(label: str, first: float, times: list[float]) -> None:
    print(
        f"  {label:40s} first {first * 1000:7.0f} ms   p50 "
        f"{statistics.median(times) * 1000:7.0f} ms   p95 {p95(times) * 1000:7.0f} ms"
    )


def writer(store: Store, stop: threading.Event, t0: float) -> None:
    """A busy bastion: 50 commands a second into the newest shard."""
    s = session(1_000_000, t0)
    seq = 0
    while not stop.wait(0.2):
        cmds = [
            Command(s.id, seq + k + 1, iso(time.time()), f"echo busy {seq + k}")
            for k in range(10)
        ]
        seq += len(cmds)
        s = dataclasses.replace(s, command_count=seq)
        store.submit(s, cmds)  # the store's own thread flushes, every 0.2 s


def fleet_part(workdir: Path, client: Any, total: int, rounds: int) -> None:
    """The same views over the fleet store (bench/console_fleet.py)."""
    from bench import console_fleet

    t0 = time.time() - total * 1.0
    with console_fleet.fleet_store(
        workdir, total, t0, session, command_text, COMMANDS_PER_SESSION
    ) as settings:
        console_fleet.use_fleet(settings)
        print(f"fleet store ({rounds} rounds each, after a first request):")
        for label, url in console_fleet.PAGES:
            report(label, *timed(client, url, rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--fleet-commands", type=int, default=1_000_000, help="0: no fleet part"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-console."))
    try:
        data_dir = workdir / "data"
        control = workdir / "control.sock"
        store = Store(data_dir / "store", flush_interval_s=0.2)
        store.open()
        started = time.perf_counter()
        t0 = time.time() - args.commands * 1.0
        fill(store, args.commands, t0)
        print(
            f"store: {args.commands} commands in "
            f"{len(os.listdir(data_dir / 'store'))} shards, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        store.start()
        with ControlServer(control, Controller(store, None, frozenset({0}))):
            client = configure(workdir, data_dir, control)
            print(f"at rest ({args.rounds} rounds each, after a first request):")
            for label, url in PAGES:
                report(label, *timed(client, url, args.rounds))
            stop = threading.Event()
            busy = threading.Thread(target=writer, args=(store, stop, t0))
            busy.start()
            try:
                print("while the agent writes 50 commands/s:")
                for label, url in PAGES:
                    report(label, *timed(client, url, args.rounds))
            finally:
                stop.set()
                busy.join()
            if args.fleet_commands:
                fleet_part(workdir, client, args.fleet_commands, args.rounds)
        store.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
