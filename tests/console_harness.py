"""A bastion for the console's end-to-end test: the agent, audit-web, users.

Four throwaway users: an auditor (in a throwaway auditors' group), a person
who is not one, the target's account, and audit-web's own account (in the
group `shadow` for PAM, and the agent's `read_group`, its own group, so that
it can read the store). A target sshd, the agent with the control socket in
its data directory, audit-web as its account; all of it removed after.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import harness, web_harness


@dataclass
class ConsoleBastion:
    workdir: Path
    auditor: harness.TestUser
    person: harness.TestUser
    target_user: harness.TestUser
    web: harness.TestUser
    target: harness.Sshd
    agent: harness.AgentProcess
    auditors_group: str
    web_url: str

    @property
    def data_dir(self) -> Path:
        return self.agent.data_dir


@contextlib.contextmanager
def group(name: str, *members: str) -> Iterator[str]:
    subprocess.run(["groupadd", name], check=True)
    try:
        for member in members:
            subprocess.run(["usermod", "-aG", name, member], check=True)
        yield name
    finally:
        subprocess.run(["groupdel", "-f", name], check=False, capture_output=True)


@contextlib.contextmanager
def console_bastion() -> Iterator[ConsoleBastion]:
    workdir = Path(tempfile.mkdtemp(prefix="bastion-audit-console."))
    try:
        workdir.chmod(0o755)
        with (
            harness.test_user(workdir, prefix="bca") as auditor,
            harness.test_user(workdir, prefix="bcp") as person,
            harness.test_user(workdir, prefix="bct") as target_user,
            harness.test_user(workdir, prefix="bcw") as web,
            group(f"bcg{secrets.token_hex(3)}", auditor.name) as auditors,
            harness.sshd(workdir) as target,
        ):
            yield from _started(
                workdir, auditor, person, target_user, web, target, auditors
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _started(
    workdir: Path,
    auditor: harness.TestUser,
    person: harness.TestUser,
    target_user: harness.TestUser,
    web: harness.TestUser,
    target: harness.Sshd,
    auditors: str,
) -> Iterator[ConsoleBastion]:
    spool = workdir / "spool"
    spool.mkdir()
    spool.chmod(0o1733)
    agent_config = workdir / "agent.toml"
    agent_config.write_text(
        f'data_dir = "{workdir / "data"}"\n'  # where audit-web reads too
        f'intents_dir = "{spool}"\n'
        f'web_intents_user = "{web.name}"\n'
        f'read_group = "{web.name}"\n'  # useradd made the user's own group
    )
    agent_config.chmod(0o644)
    with (
        harness.agent(workdir / "data", "--config", str(agent_config)) as agent,
        audit_web(workdir, web, target_user, spool, agent_config, auditors) as url,
    ):
        yield ConsoleBastion(
            workdir,
            auditor,
            person,
            target_user,
            web,
            target,
            agent,
            auditors,
            url,
        )


@contextlib.contextmanager
def audit_web(
    workdir: Path,
    web: harness.TestUser,
    terminal: harness.TestUser,
    spool: Path,
    agent_config: Path,
    auditors: str,
    more: str = "",
) -> Iterator[str]:
    """audit-web as its own account (and `shadow`, for PAM); its URL.

    `more`: TOML for the end of its [web] table (a [web.fleet] table).
    """
    state, run = workdir / "web-state", workdir / "web-run"
    for path in (state, run):
        path.mkdir()
        subprocess.run(["chown", web.name, str(path)], check=True)
    state.chmod(0o700)
    web_port = harness.free_port()
    config = workdir / "shell.toml"
    config.write_text(
        f'[shell]\nintents_dir = "{spool}"\n'
        "[web]\n"
        f"listen_port = {web_port}\n"
        f'state_dir = "{state}"\n'
        f'redeem_socket = "{run}/redeem.sock"\n'
        f'terminal_user = "{terminal.name}"\n'
        f'agent_config = "{agent_config}"\n'
        f'auditor_group = "{auditors}"\n' + more
    )
    config.chmod(0o644)
    launcher = web_harness._web_launcher(workdir, web.uid)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(web.home)}
    with web_harness._process(
        [str(launcher), "--config", str(config)],
        workdir / "audit-web.log",
        env=env,
        cwd="/",
        **web_harness._run_as(web, "shadow"),
    ) as process:
        harness.wait_for(
            lambda: harness._accepts(web_port) or process.poll() is not None,
            timeout=20,
        )
        if process.poll() is not None:
            log = (workdir / "audit-web.log").read_text(errors="replace")
            raise RuntimeError(f"audit-web exited: {log}")
        yield f"http://127.0.0.1:{web_port}/"
