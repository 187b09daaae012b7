"""Three bastions, one fleet store: live sessions through an outage and a kill -9.

Three real agents (their own data dirs and bastion ids, each scoped to the
shell its sessions start from) trace tagged ssh sessions through a real sshd
and ship to one PostgreSQL 15 of the test's own. PostgreSQL is stopped for
20 s mid-session and started again; one agent is killed with SIGKILL and
restarted meanwhile. Afterwards the fleet store holds every command once, in
order, and `audit-export --database` is the union of the three local exports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import harness
from tests.pg_harness import PgServer, postgres

pytestmark = [pytest.mark.root, pytest.mark.slow]

BASTIONS = ("b1", "b2", "b3")
AGENT_PASSWORD = "fleet-agent-pw"
AUDITOR_PASSWORD = "fleet-auditor-pw"
OUTAGE_S = 20.0
TAG = "fleet-e2e"  # the same tag, so the same session id, on every bastion


@pytest.fixture
def pg() -> Iterator[PgServer]:
    with postgres() as server:
        result = subprocess.run(
            [
                str(harness.BIN / "audit-agent"),
                "fleet-init",
                "--database",
                server.dsn(),
            ],
            env={**os.environ, "PGPASSWORD": server.password},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        for b in BASTIONS:
            server.add_agent_role(f"agent_{b}", AGENT_PASSWORD, b)
        server.add_auditor_role("auditor", AUDITOR_PASSWORD)
        yield server


class Bastion:
    """One bastion: a shell its sessions start from, its agent, its config."""

    def __init__(self, name: str, root: Path, pg: PgServer) -> None:
        self.name = name
        self.data_dir = root / name / "data"
        self.data_dir.parent.mkdir(parents=True)
        password = root / name / "fleet.password"
        password.write_text(AGENT_PASSWORD + "\n")
        password.chmod(0o600)
        self.config = root / name / "agent.toml"
        self.config.write_text(
            "[fleet]\n"
            f'database = "{pg.dsn(f"agent_{name}")}"\n'
            f'password_file = "{password}"\n'
            f'bastion = "{name}"\n'
            "retry_interval_s = 1.0\n"
        )
        # The agent's scope: ssh started from this shell is this bastion's.
        self.shell = harness.spawn_ssh(["--norc", "--noprofile"], program="bash")
        self.shell.expect("# ")
        self.typed: list[str] = []
        self.agent: harness.AgentProcess | None = None

    def start_agent(self, stack: contextlib.ExitStack) -> None:
        self.agent = stack.enter_context(
            harness.agent(
                self.data_dir,
                "--config",
                str(self.config),
                "--scope-pid",
                str(self.shell.pid),
            )
        )

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.process.send_signal(signal.SIGKILL)
        self.agent.process.wait(10)

    def open_session(self, user: harness.TestUser, server: harness.Sshd) -> None:
        argv = harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={TAG}")
        self.shell.sendline("ssh " + " ".join(shlex.quote(a) for a in argv))
        self.shell.expect(harness.PROMPT)
        shell = psutil.Process(self.shell.pid)
        ssh_pid = harness.wait_for(
            lambda: next((c.pid for c in shell.children() if c.name() == "ssh"), None)
        )
        harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=15)

    def type(self, n: int) -> None:
        for _ in range(n):
            command = f"echo {self.name}-{len(self.typed) + 1}"
            self.shell.send(command.encode() + b"\r")
            self.shell.expect(harness.PROMPT)
            self.typed.append(command)

    def local_commands(self) -> list[str]:
        return [r["command"] for r in harness.export(self.data_dir)]

    def wait_local(self) -> None:
        harness.wait_for(lambda: self.local_commands() == self.typed, timeout=30)

    def status(self) -> dict[str, Any]:
        result = harness.run_cli(
            "audit-agent", "status", "--data-dir", str(self.data_dir), "--json"
        )
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc


def fleet_commands(pg: PgServer, bastion: str) -> list[str]:
    rows = pg.sql(
        "SELECT command FROM commands WHERE bastion = %s AND session = %s ORDER BY seq",
        (bastion, TAG),
    )
    return [r[0] for r in rows]


def read_fleet(pg: PgServer, tool: str, *args: str) -> Any:
    result = subprocess.run(
        [str(harness.BIN / tool), "--database", pg.dsn("auditor"), *args],
        env={**os.environ, "PGPASSWORD": AUDITOR_PASSWORD},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["time"], r.get("bastion", ""), r["seq"]))


def test_three_agents_ship_through_an_outage_and_a_kill(
    pg: PgServer,
    tmp_path: Path,
    user: harness.TestUser,
    server: harness.Sshd,
) -> None:
    tmp_path.chmod(0o755)
    with contextlib.ExitStack() as stack:
        bastions = [Bastion(name, tmp_path, pg) for name in BASTIONS]
        for b in bastions:
            stack.callback(b.shell.close, force=True)
            b.start_agent(stack)
            b.open_session(user, server)
        for b in bastions:
            b.type(3)
        for b in bastions:
            b.wait_local()
            harness.wait_for(lambda b=b: fleet_commands(pg, b.name) == b.typed)

        pg.stop()  # the fleet store goes away, mid-session
        down_at = time.monotonic()
        for b in bastions:
            b.type(3)
            b.wait_local()
        second = bastions[1]
        second.kill_agent()  # its strace goes on; the next agent adopts it
        second.type(2)
        second.start_agent(stack)
        second.wait_local()
        status = bastions[0].status()["status"]["fleet"]
        assert status["state"] == "unreachable" and status["lag_records"] == 3
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        pg.start()

        for b in bastions:
            b.type(2)
            b.wait_local()
        for b in bastions:
            b.shell.sendeof()  # leaves the remote bash; ssh ends
            b.shell.expect("# ")
        for b in bastions:
            harness.wait_for(
                lambda b=b: harness.sessions_in(b.data_dir)[TAG].status == "closed",
                timeout=30,
            )
            harness.wait_for(
                lambda b=b: fleet_commands(pg, b.name) == b.typed, timeout=60
            )
            harness.wait_for(
                lambda b=b: (
                    pg.sql(
                        "SELECT status FROM sessions WHERE bastion = %s AND id = %s",
                        (b.name, TAG),
                    )
                    == [("closed",)]
                ),
                timeout=30,
            )
            assert b.status()["status"]["fleet"]["lag_records"] == 0

    # Every command once, in order, on every bastion.
    for b in bastions:
        seqs = pg.sql(
            "SELECT seq FROM commands WHERE bastion = %s ORDER BY seq", (b.name,)
        )
        assert [s for (s,) in seqs] == list(range(1, len(b.typed) + 1))
    assert len(bastions[1].typed) == 10

    # audit-export --database is the union of the three local exports.
    fleet = read_fleet(pg, "audit-export")
    union = []
    for b in bastions:
        union += [{**r, "bastion": b.name} for r in harness.export(b.data_dir)]
    assert order(fleet) == order(union)
    sessions = read_fleet(pg, "audit-sessions", "--format", "json")
    assert sorted(s["bastion"] for s in sessions) == list(BASTIONS)
    for s in sessions:
        assert s["id"] == TAG and s["status"] == "closed"
        assert s["command_count"] == len(bastions[BASTIONS.index(s["bastion"])].typed)
        assert s["recording_bytes"]
    cast = subprocess.run(
        [
            str(harness.BIN / "audit-export"),
            "--database",
            pg.dsn("auditor"),
            "--cast",
            TAG,
            "--bastion",
            "b2",
        ],
        env={**os.environ, "PGPASSWORD": AUDITOR_PASSWORD},
        capture_output=True,
    )
    assert cast.returncode == 0, cast.stderr
    assert b"b2-10" in cast.stdout
