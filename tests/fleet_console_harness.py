"""Two bastions, one fleet store, one console over it: for the end-to-end test.

A PostgreSQL 15 of the test's own (tests/pg_harness.py) with the schema,
one agent role per bastion and a login role of the auditor group for
audit-web. Each bastion is a bash (its sessions start from there) and a real
agent scoped to it that ships to the fleet store; the first bastion is
audit-web's own (its agent logs the console's accesses and would cut its
sessions). audit-web runs as its own account (tests/console_harness.py) and
reads the fleet store with `[web.fleet]`, the password from a file of its
own. Users: an auditor, a person who is not one, the target's account and
audit-web's; a target sshd. All of it removed after.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import psutil

from agent.fleet_schema import migrate
from tests import harness
from tests.console_harness import audit_web, group
from tests.pg_harness import PgServer, postgres

AGENT_PASSWORD = "fleet-console-agent"
WEB_ROLE = "console_web"


@dataclass
class FleetBastion:
    name: str
    root: Path
    shell: pexpect.spawn
    config: Path
    agent: harness.AgentProcess | None = None
    typed: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def open_session(
        self, user: harness.TestUser, server: harness.Sshd, tag: str
    ) -> int:
        """A tagged ssh from this bastion's shell, traced by its agent; its pid."""
        argv = harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
        self.shell.sendline("ssh " + " ".join(shlex.quote(a) for a in argv))
        self.shell.expect(harness.PROMPT)
        shell = psutil.Process(self.shell.pid)
        ssh_pid: int = harness.wait_for(
            lambda: next((c.pid for c in shell.children() if c.name() == "ssh"), None)
        )
        harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=15)
        return ssh_pid

    def type(self, line: str, shows: bytes) -> None:
        self.shell.send(line.encode() + b"\r")
        self.shell.expect(shows)
        self.shell.expect(harness.PROMPT)
        self.typed.append(line)

    def close_session(self) -> None:
        self.shell.sendline("exit")
        self.shell.expect("# ")


@dataclass
class FleetConsoleSite:
    workdir: Path
    pg: PgServer
    auditor: harness.TestUser
    person: harness.TestUser
    target_user: harness.TestUser
    web: harness.TestUser
    target: harness.Sshd
    bastions: dict[str, FleetBastion]
    web_url: str

    @property
    def log_text(self) -> str:
        parts = [(self.workdir / "audit-web.log").read_text(errors="replace")]
        for b in self.bastions.values():
            if b.agent is not None:
                parts.append(f"--- agent {b.name}\n{b.agent.log_text()[-3000:]}")
        return "\n".join(parts)


def _secret_file(path: Path, text: str, owner: int = 0) -> Path:
    path.write_text(text + "\n")
    os.chown(path, owner, -1)
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def fleet_console(names: tuple[str, ...]) -> Iterator[FleetConsoleSite]:
    workdir = Path(tempfile.mkdtemp(prefix="bastion-audit-fleet-console."))
    try:
        workdir.chmod(0o755)
        with (
            harness.test_user(workdir, prefix="bfa") as auditor,
            harness.test_user(workdir, prefix="bfp") as person,
            harness.test_user(workdir, prefix="bft") as target_user,
            harness.test_user(workdir, prefix="bfw") as web,
            group(f"bfg{secrets.token_hex(3)}", auditor.name) as auditors,
            harness.sshd(workdir) as target,
            postgres() as pg,
            contextlib.ExitStack() as stack,
        ):
            with pg.connect(autocommit=False) as conn:
                migrate(conn)
            web_password = secrets.token_urlsafe(12)
            pg.add_auditor_role(WEB_ROLE, web_password)
            spool = workdir / "spool"
            spool.mkdir()
            spool.chmod(0o1733)
            bastions = {}
            for n, name in enumerate(names):
                pg.add_agent_role(f"agent_{name}", AGENT_PASSWORD, name)
                b = _bastion(workdir, pg, name, web if n == 0 else None, spool)
                stack.callback(b.shell.close, force=True)
                b.agent = stack.enter_context(
                    harness.agent(
                        b.data_dir,
                        "--config",
                        str(b.config),
                        "--scope-pid",
                        str(b.shell.pid),
                    )
                )
                bastions[name] = b
            pw = _secret_file(workdir / "web-fleet.password", web_password, web.uid)
            more = (
                "[web.fleet]\n"
                f'database = "{pg.dsn(WEB_ROLE)}"\n'
                f'password_file = "{pw}"\n'
            )
            home = bastions[names[0]]
            url = stack.enter_context(
                audit_web(workdir, web, target_user, spool, home.config, auditors, more)
            )
            yield FleetConsoleSite(
                workdir, pg, auditor, person, target_user, web, target, bastions, url
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bastion(
    workdir: Path, pg: PgServer, name: str, web: harness.TestUser | None, spool: Path
) -> FleetBastion:
    """One bastion: its shell, and its agent's configuration (the web's, if `web`)."""
    root = workdir / name
    root.mkdir(mode=0o755)
    password = _secret_file(root / "fleet.password", AGENT_PASSWORD)
    config = root / "agent.toml"
    text = f'data_dir = "{root / "data"}"\nintents_dir = "{spool}"\n'
    if web is not None:  # the console's own bastion: its control socket, its group
        text += f'web_intents_user = "{web.name}"\nread_group = "{web.name}"\n'
    config.write_text(
        text + "[fleet]\n"
        f'database = "{pg.dsn(f"agent_{name}")}"\n'
        f'password_file = "{password}"\n'
        f'bastion = "{name}"\n'
        "retry_interval_s = 1.0\n"
    )
    config.chmod(0o644)
    shell = harness.spawn_ssh(["--norc", "--noprofile"], program="bash", cols=100)
    shell.expect("# ")
    return FleetBastion(name, root, shell, config)
