"""A web bastion for the end-to-end test: audit-web, shellinaboxd, Chromium.

Four throwaway users: the person (signs in on the page), the target's
account, the terminal's service account (shellinaboxd runs
`audit-shell --token-login` as it) and audit-web's own account (in the group
`shadow`, as the README says, so PAM can check passwords). A target sshd,
the agent's spool, audit-web and shellinaboxd on free 127.0.0.1 ports, and
a headless Chromium driven by Selenium; all of it stopped and removed after.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import harness, shell_harness

SHELLINABOXD = "/usr/bin/shellinaboxd"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN_TTL_S = 20  # short, so that the test can watch a token expire
BASTION = "bastion-web-test"  # the name the token page gives this bastion
STOP_S = 10.0


@dataclass
class WebBastion:
    workdir: Path
    person: harness.TestUser
    target_user: harness.TestUser
    terminal: harness.TestUser
    web: harness.TestUser
    target: harness.Sshd
    config: Path
    agent_config: Path
    web_url: str
    terminal_url: str


def _run_as(user: harness.TestUser, *groups: str) -> dict[str, object]:
    entry = pwd.getpwnam(user.name)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [grp.getgrnam(g).gr_gid for g in groups],
    }


@contextlib.contextmanager
def _process(
    argv: list[str], log: Path, **kw: object
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session; SIGTERM, a deadline, then SIGKILL."""
    with open(log, "ab") as out:
        process = subprocess.Popen(  # type: ignore[call-overload]
            argv, stdout=out, stderr=out, start_new_session=True, **kw
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _web_launcher(workdir: Path, uid: int) -> Path:
    """audit-web for an account that cannot run the venv's interpreter."""
    shell = shell_harness.launcher(workdir, uid)  # the same interpreter and path
    path = workdir / "audit-web"
    path.write_text(
        shell.read_text().replace(
            "from agent.shell.main import main", "from web.__main__ import main"
        )
    )
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def web_bastion() -> Iterator[WebBastion]:
    workdir = Path(tempfile.mkdtemp(prefix="bastion-audit-web."))
    try:
        workdir.chmod(0o755)
        with (
            harness.test_user(workdir, prefix="bwp") as person,
            harness.test_user(workdir, prefix="bwt") as target_user,
            harness.test_user(workdir, prefix="bwx") as terminal,
            harness.test_user(workdir, prefix="bww") as web,
            harness.sshd(workdir) as target,
        ):
            yield from _started(workdir, person, target_user, terminal, web, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _started(
    workdir: Path,
    person: harness.TestUser,
    target_user: harness.TestUser,
    terminal: harness.TestUser,
    web: harness.TestUser,
    target: harness.Sshd,
) -> Iterator[WebBastion]:
    spool = workdir / "spool"
    spool.mkdir()
    spool.chmod(0o1733)
    key = workdir / "target_key"
    shutil.copy(target_user.key, key)
    os.chown(key, terminal.uid, -1)
    key.chmod(0o600)
    state, run = workdir / "web-state", workdir / "web-run"
    for path in (state, run):
        path.mkdir()
        os.chown(path, web.uid, -1)
    state.chmod(0o700)
    web_port, terminal_port = harness.free_port(), harness.free_port()
    web_url = f"http://127.0.0.1:{web_port}/"
    terminal_url = f"http://127.0.0.1:{terminal_port}/"
    config = workdir / "shell.toml"
    config.write_text(  # no passwords in it: everyone may read it
        f'[shell]\nintents_dir = "{spool}"\n'
        "[web]\n"
        f"listen_port = {web_port}\n"
        f'state_dir = "{state}"\n'
        f'redeem_socket = "{run}/redeem.sock"\n'
        f'terminal_user = "{terminal.name}"\n'
        f'terminal_url = "{terminal_url}"\n'
        f"token_ttl_s = {TOKEN_TTL_S}\n"
        f'bastion = "{BASTION}"\n'
        '[[host]]\nname = "web1"\naddress = "127.0.0.1"\n'
        f'port = {target.port}\ngroup = "web"\n'
        f'  [[host.account]]\n  name = "{target_user.name}"\n  key_file = "{key}"\n'
        '[[host]]\nname = "secret1"\naddress = "127.0.0.1"\n'
        f'port = {target.port}\ngroup = "web"\n'
        f'  [[host.account]]\n  name = "root"\n  key_file = "{key}"\n'
        f'[[grant]]\nusers = ["{person.name}"]\nhosts = ["web1"]\naccounts = ["*"]\n'
    )
    config.chmod(0o644)
    agent_config = workdir / "agent.toml"
    agent_config.write_text(
        f'intents_dir = "{spool}"\nweb_intents_user = "{web.name}"\n'
    )
    audit_shell = shell_harness.launcher(workdir, terminal.uid)
    audit_web = _web_launcher(workdir, web.uid)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(web.home)}
    with (
        _process(
            [str(audit_web), "--config", str(config)],
            workdir / "audit-web.log",
            env=env,
            cwd="/",
            **_run_as(web, "shadow"),
        ) as web_process,
        _process(
            [
                SHELLINABOXD,
                "--port",
                str(terminal_port),
                "--localhost-only",
                "--disable-ssl",
                "--no-beep",
                "--service",
                f"/:{terminal.name}:{terminal.name}:HOME:"
                f"{audit_shell} --token-login --config {config}",
            ],
            workdir / "shellinaboxd.log",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd="/",
        ) as siab,
    ):
        for port, process, name in (
            (web_port, web_process, "audit-web"),
            (terminal_port, siab, "shellinaboxd"),
        ):
            harness.wait_for(
                lambda: harness._accepts(port) or process.poll() is not None,  # noqa: B023
                timeout=20,
            )
            if process.poll() is not None:
                log = (workdir / f"{name}.log").read_text(errors="replace")
                raise RuntimeError(f"{name} exited: {log}")
        yield WebBastion(
            workdir,
            person,
            target_user,
            terminal,
            web,
            target,
            config,
            agent_config,
            web_url,
            terminal_url,
        )


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """Debian's headless Chromium under Debian's chromedriver, via Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--window-size=1000,700",
    ):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile) + ".log")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
