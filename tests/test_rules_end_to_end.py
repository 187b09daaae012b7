"""Command rules acting on real sessions: a webhook, a cut, a lock, a deny.

Real components only: sshd on 127.0.0.1, bash, ssh in a pty traced by the
agent as a daemon process, an HTTP receiver the test starts on 127.0.0.1,
audit-shell as the test person with its paramiko backend.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pexpect
import pytest

from tests import harness, shell_harness
from tests.shell_harness import MENU_FOOTER, TAG_RE, Bastion

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEADLINE_S = 20.0
ALERT_SCHEMA = json.loads((harness.REPO / "schema" / "alert.schema.json").read_text())


class Receiver:
    """A webhook receiver on 127.0.0.1: the bodies it got; fails the first N."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.attempts = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(503)
                else:
                    receiver.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def write_rules(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def actions_of(data_dir: Path, tag: str) -> list[dict[str, Any]]:
    return [
        r for r in harness.export(data_dir, "--session", tag) if r["kind"] == "action"
    ]


def open_traced(user: harness.TestUser, server: harness.Sshd, tag: str) -> Any:
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    )
    ssh_pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
    return child


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as r:
        yield r


def test_alert_reaches_the_webhook_and_cut_ends_the_ssh(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd, receiver: Receiver
) -> None:
    rules = write_rules(
        tmp_path / "rules.toml",
        f"""
[alert]
webhook = "{receiver.url}"
webhook_backoff_s = 0.1

[[rule]]
name = "fine-here"
pattern = 'echo alert-me --ok'
actions = ["allow"]

[[rule]]
name = "alert-me"
pattern = '\\becho\\s+alert-me\\b'
actions = ["alert", "highlight"]
bastion_users = ["root"]

[[rule]]
name = "cut-me"
pattern = '^echo cut-me$'
actions = ["alert", "cut"]
""",
    )
    config = tmp_path / "agent.toml"
    config.write_text(f'rules_file = "{rules}"\nlocks_dir = "{tmp_path / "locks"}"\n')
    data_dir = tmp_path / "data"
    with harness.agent(data_dir, "--config", str(config)) as agent:
        tag = "rules-alert"
        child = open_traced(user, server, tag)
        child.send(b"echo alert-me --ok\r")  # the allow rule stops the others
        child.expect(harness.PROMPT)
        child.send(b"echo alert-me now\r")
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: receiver.bodies, timeout=DEADLINE_S)
        (body,) = receiver.bodies
        jsonschema.validate(body, ALERT_SCHEMA)
        assert body["rule"] == "alert-me"
        assert body["record"]["command"] == "echo alert-me now"
        assert body["record"]["session"] == tag
        assert body["record"]["seq"] == 2
        assert body["record"]["bastion_user"] == "root"
        assert body["record"]["remote_user"] == user.name
        assert receiver.attempts == 3  # two 503s, retried with backoff
        record = harness.wait_for(lambda: actions_of(data_dir, tag), timeout=DEADLINE_S)
        assert record[0]["action"]["rule"] == "alert-me"
        assert record[0]["action"]["outcome"] == "done"
        assert record[0]["action"]["command_seq"] == 2

        started = time.monotonic()
        child.send(b"echo cut-me\r")
        child.expect(pexpect.EOF, timeout=10)
        ended = time.monotonic() - started
        child.close()
        session = harness.wait_for(
            lambda: (
                (s := harness.sessions_in(data_dir).get(tag))
                and s.status == "terminated"
                and s
            ),
            timeout=DEADLINE_S,
        )
        assert session.end_reason == "cut by rule cut-me", agent.log_text()[-2000:]
        assert ended < 5.0
        done = {
            (a["action"]["rule"], a["action"]["action"])
            for a in actions_of(data_dir, tag)
        }
        assert ("cut-me", "cut") in done
        status = subprocess.run(
            [str(harness.BIN / "audit-agent"), "status", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
        )
        assert "alerts: to http://127.0.0.1" in status.stdout
    # The action records are in the hash chain like any record.
    verified = harness.run_cli("audit-export", "--data-dir", str(data_dir), "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture(scope="module")
def bastion() -> Iterator[Bastion]:
    with shell_harness.bastion() as b:
        yield b


def shell_with_rules(bastion: Bastion, rules: str, name: str) -> tuple[Path, Path]:
    """A rules file, and an audit-shell config (paramiko) that names it."""
    path = write_rules(bastion.workdir / f"{name}.rules.toml", rules)
    locks = bastion.workdir / "locks"
    config = bastion.write_config(
        f"{name}.toml",
        shell=(
            'backend = "paramiko"\naudit_wait_s = 0\n'
            f'rules_file = "{path}"\nlocks_dir = "{locks}"\n'
        ),
    )
    agent_config = bastion.workdir / f"{name}.agent.toml"
    agent_config.write_text(
        bastion.agent_config.read_text()
        + f'rules_file = "{path}"\nlocks_dir = "{locks}"\n'
    )
    return config, agent_config


def pick(child: pexpect.spawn, text: bytes) -> str:
    child.expect(MENU_FOOTER)
    child.send(text + b"\r")
    child.expect(TAG_RE)
    return str(child.match.group(1).decode())


def test_lock_refuses_the_next_login_until_unlocked(bastion: Bastion) -> None:
    config, agent_config = shell_with_rules(
        bastion,
        """
[[rule]]
name = "lock-me"
pattern = 'echo lock-me'
actions = ["lock"]
lock_for_s = 0
""",
        "lock",
    )
    data_dir = bastion.workdir / "lock-data"
    with harness.agent(data_dir, "--config", str(agent_config)) as agent:
        child = shell_harness.run_as_person(bastion, config)
        tag = pick(child, b"web1")
        child.expect(harness.PROMPT)
        child.send(b"echo lock-me\r")
        child.expect(harness.PROMPT)
        lock = bastion.workdir / "locks" / f"{bastion.person.name}.lock"
        harness.wait_for(lock.exists, timeout=DEADLINE_S)
        child.send(b"exit\r")
        # Back at the menu: no new session from it either.
        child.expect(MENU_FOOTER)
        child.send(b"\r")  # the menu kept its filter: web1 again
        child.expect(b"locked by rule lock-me")
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()

        again = shell_harness.run_as_person(bastion, config)
        again.expect(pexpect.EOF)
        assert b"locked by rule lock-me" in again.before
        again.close()
        assert again.exitstatus != 0

        (record,) = actions_of(data_dir, tag)
        assert record["action"]["action"] == "lock"
        assert record["action"]["outcome"] == "done"

        unlocked = subprocess.run(
            [
                str(harness.BIN / "audit-agent"),
                "unlock",
                bastion.person.name,
                "--config",
                str(agent_config),
            ],
            capture_output=True,
            text=True,
        )
        assert unlocked.returncode == 0, unlocked.stderr
        assert "unlocked" in unlocked.stdout
        child = shell_harness.run_as_person(bastion, config)
        child.expect(MENU_FOOTER)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert "lock-me" in agent.log_text()


def test_deny_keeps_the_command_from_running_on_the_target(bastion: Bastion) -> None:
    marker = bastion.target_user.home / "denied-file"
    config, agent_config = shell_with_rules(
        bastion,
        """
[[rule]]
name = "no-touch"
pattern = '\\btouch\\b.*denied-file'
actions = ["deny"]
""",
        "deny",
    )
    data_dir = bastion.workdir / "deny-data"
    with harness.agent(data_dir, "--config", str(agent_config)):
        child = shell_harness.run_as_person(bastion, config)
        tag = pick(child, b"web1")
        child.expect(harness.PROMPT)
        # Typed with an edit: the line on the screen is what is judged.
        child.send(b"touch ~/denied-filX\x7fe\r")
        try:
            child.expect(b"command refused by rule no-touch")
        except pexpect.TIMEOUT:
            raise AssertionError(child.before.decode(errors="replace")) from None
        child.expect(harness.PROMPT)
        child.send(b"echo after-deny\r")
        child.expect(b"after-deny")
        child.expect(harness.PROMPT)
        child.send(b"exit\r")
        child.expect(MENU_FOOTER)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert not marker.exists()
        records = harness.wait_for(
            lambda: (
                (r := harness.export(data_dir, "--session", tag))
                and any(x["command"] == "echo after-deny" for x in r)
                and r
            ),
            timeout=DEADLINE_S,
        )
        denied = [r for r in records if r["kind"] == "denied"]
        assert [r["command"] for r in denied] == ["touch ~/denied-file"]
        assert denied[0]["action"]["rule"] == "no-touch"
        commands = [r["command"] for r in records if r["kind"] == "command"]
        assert commands == ["echo after-deny", "exit"]
    assert os.path.exists(bastion.target_user.home)
