"""audit-shell's paramiko backend with everything real: sshd, agent, a pty.

audit-shell runs as the test person (setpriv) in a real pty, opens the target
with paramiko and records the session into the recordings spool; the agent
(a real daemon process) reads it from there into the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import psutil
import pytest

from tests import harness, shell_harness
from tests.shell_harness import MENU_FOOTER, TAG_RE, Bastion

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEADLINE_S = 20.0
PARAMIKO = 'backend = "paramiko"\naudit_wait_s = 0\n'


@pytest.fixture(scope="module")
def bastion() -> Iterator[Bastion]:
    with shell_harness.bastion() as b:
        yield b


@pytest.fixture(scope="module")
def config(bastion: Bastion) -> Path:
    return bastion.write_config("paramiko.toml", shell=PARAMIKO)


@pytest.fixture(scope="module")
def agent(bastion: Bastion) -> Iterator[harness.AgentProcess]:
    data_dir = bastion.workdir / "data"
    with harness.agent(data_dir, "--config", str(bastion.agent_config)) as a:
        yield a


def pick(child: pexpect.spawn, text: bytes) -> str:
    child.expect(MENU_FOOTER)
    child.send(text + b"\r")
    child.expect(TAG_RE)
    return str(child.match.group(1).decode())


def commands_of(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def wait_commands(data_dir: Path, tag: str, expected: list[str], log: str = "") -> None:
    try:
        harness.wait_for(
            lambda: commands_of(data_dir, tag) == expected, timeout=DEADLINE_S
        )
    except TimeoutError:
        raise AssertionError(
            f"stored {commands_of(data_dir, tag)!r}, not {expected!r}\n{log[-3000:]}"
        ) from None


def closed_session(data_dir: Path, tag: str) -> object:
    return harness.wait_for(
        lambda: (
            (s := harness.sessions_in(data_dir).get(tag))
            and s.status in ("closed", "terminated")
            and s
        ),
        timeout=DEADLINE_S,
    )


def leave(child: pexpect.spawn) -> None:
    child.sendeof()
    child.expect(MENU_FOOTER)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()


def test_session_is_recorded_by_paramiko_and_stored(
    bastion: Bastion, config: Path, agent: harness.AgentProcess
) -> None:
    data_dir = agent.data_dir
    child = shell_harness.run_as_person(bastion, config)
    tag = pick(child, b"web1")
    child.expect(harness.PROMPT)
    child.send(b"echo from-paramiko\r")
    child.expect(b"from-paramiko")
    child.expect(harness.PROMPT)
    child.send(b"printf '%s\\n' \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\r")
    child.expect(harness.PROMPT)
    # Ctrl-C, Ctrl-Z and Ctrl-\ reach the remote terminal, not audit-shell.
    for key, shown in ((b"\x03", rb"\^C"), (b"\x1a", b"Stopped"), (b"\x1c", b"Quit")):
        child.send(b"sleep 30\r")
        time.sleep(0.5)
        child.send(key)
        child.expect(shown, timeout=10)
        child.expect(harness.PROMPT)
    # A resize reaches the remote pty.
    child.setwinsize(30, 90)
    time.sleep(0.3)
    child.send(b"stty size\r")
    child.expect(b"30 90")
    child.expect(harness.PROMPT)
    wait_commands(
        data_dir,
        tag,
        [
            "echo from-paramiko",
            "printf '%s\\n' été 日本",
            "sleep 30",
            "sleep 30",
            "sleep 30",
            "stty size",
        ],
        agent.log_text(),
    )
    child.send(b"kill -9 %1\r")
    child.expect(harness.PROMPT)
    time.sleep(0.3)
    child.send(b"exit\r")
    if child.expect([MENU_FOOTER, b"There are stopped jobs"]) == 1:
        child.send(b"exit\r")  # bash warns once about the job being killed
        child.expect(MENU_FOOTER)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()

    session = closed_session(data_dir, tag)
    assert session.recorder == "paramiko"  # type: ignore[attr-defined]
    records = harness.export(data_dir, "--session", tag)
    assert {r["recorder"] for r in records} == {"paramiko"}
    assert {r["origin"] for r in records} == {"audit-shell"}
    assert {r["bastion_user"] for r in records} == {bastion.person.name}
    assert {r["remote_user"] for r in records} == {bastion.target_user.name}
    assert {r["port"] for r in records} == {bastion.target.port}
    listed = harness.run_cli(
        "audit-sessions", "--data-dir", str(data_dir), "--format", "jsonl", check=True
    )
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert any(r["id"] == tag and r["recorder"] == "paramiko" for r in rows)
    # The replay of its screen works as for strace sessions.
    cast = harness.run_cli("audit-export", "--data-dir", str(data_dir), "--cast", tag)
    assert cast.returncode == 0 and "from-paramiko" in cast.stdout
    # accept-new: the host's key is now in the person's known_hosts.
    known = bastion.person.home / ".bastion-audit" / "known_hosts"
    assert f"[127.0.0.1]:{bastion.target.port}" in known.read_text()
    # The recording is removed once the store holds the closed session.
    harness.wait_for(lambda: not list(bastion.recordings.iterdir()), timeout=10)


def test_password_account_and_changed_host_key(
    bastion: Bastion, agent: harness.AgentProcess
) -> None:
    # Per host: db1 uses paramiko while the global backend stays ssh.
    hosts = bastion.default_hosts().replace(
        'group = "databases"\n', 'group = "databases"\nbackend = "paramiko"\n', 1
    )
    config = bastion.write_config(
        "per-host.toml", shell="audit_wait_s = 0", hosts=hosts
    )
    child = shell_harness.run_as_person(bastion, config)
    tag = pick(child, b"db1")
    child.expect(harness.PROMPT)
    child.send(b"echo with-password\r")
    child.expect(harness.PROMPT)
    wait_commands(agent.data_dir, tag, ["echo with-password"], agent.log_text())
    child.sendeof()
    child.expect(MENU_FOOTER)
    secret = bastion.target_user.password.encode()
    assert not [
        p
        for p in [*agent.data_dir.rglob("*"), *bastion.recordings.rglob("*")]
        if p.is_file() and secret in p.read_bytes()
    ]
    # A different key for the same host: refused, one clear line.
    known = bastion.person.home / ".bastion-audit" / "known_hosts"
    saved = known.read_text()
    other = bastion.workdir / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
    )
    key_type, key_text = Path(f"{other}.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{bastion.target.port} {key_type} {key_text}\n")
    try:
        child.send(b"\x15db1\r")  # Ctrl-U: the filter is kept from before
        child.expect(b"has changed; refusing to connect")
        child.expect(MENU_FOOTER)
    finally:
        known.write_text(saved)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()


def _recorder_pid(person_uid: int) -> int:
    """The forked paramiko child: a process of the person holding a TCP socket."""
    for proc in psutil.process_iter(["uids", "cmdline"]):
        try:
            if proc.info["uids"].real == person_uid and proc.net_connections("tcp"):
                return int(proc.pid)
        except (psutil.Error, AttributeError):
            continue
    return 0


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_recording_that_cannot_be_written(
    bastion: Bastion, agent: harness.AgentProcess, mode: str
) -> None:
    config = bastion.write_config(
        f"{mode}.toml", shell=PARAMIKO + f'recording_mode = "{mode}"\n'
    )
    # A file size limit: the recording stops growing at 64 KiB (EFBIG).
    child = shell_harness.run_as_person(bastion, config, "prlimit", "--fsize=65536")
    tag = pick(child, b"web1")
    child.expect(harness.PROMPT)
    child.send(b"echo before-the-limit\r")
    child.expect(harness.PROMPT)
    wait_commands(agent.data_dir, tag, ["echo before-the-limit"], agent.log_text())
    child.send(b"seq 1 30000\r")
    if mode == "strict":
        child.expect(b"this session cannot be recorded")
        child.expect(MENU_FOOTER)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
    else:
        child.expect(b"30000")
        child.expect(harness.PROMPT)
        child.send(b"echo after-the-limit\r")
        child.expect(b"after-the-limit\r\n")
        child.expect(harness.PROMPT)
        leave(child)
    session = closed_session(agent.data_dir, tag)
    assert commands_of(agent.data_dir, tag)[0] == "echo before-the-limit"
    if mode == "strict":
        # Cut: what could not be recorded never reached the person.
        assert session.status == "terminated", session  # type: ignore[attr-defined]
        assert "recording failed" in session.end_reason  # type: ignore[attr-defined]
    else:
        # Went on: the stretch that could not be written is a gap.
        assert session.status == "closed", session  # type: ignore[attr-defined]
        assert session.gaps, session  # type: ignore[attr-defined]


def test_agent_killed_and_restarted_stores_every_command_once(
    bastion: Bastion, config: Path
) -> None:
    data_dir = bastion.workdir / "restart-data"
    args = ("--config", str(bastion.agent_config))
    child = shell_harness.run_as_person(bastion, config)
    with harness.agent(data_dir, *args) as first:
        tag = pick(child, b"web1")
        child.expect(harness.PROMPT)
        for n in range(3):
            child.send(f"echo one-{n}\r".encode())
            child.expect(harness.PROMPT)
        wait_commands(data_dir, tag, [f"echo one-{n}" for n in range(3)])
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    for n in range(3):
        child.send(f"echo two-{n}\r".encode())
        child.expect(harness.PROMPT)
    with harness.agent(data_dir, *args) as second:
        expected = [f"echo one-{n}" for n in range(3)]
        expected += [f"echo two-{n}" for n in range(3)]
        wait_commands(data_dir, tag, expected, second.log_text())
        # The recorder itself killed: the agent closes the session with a gap.
        pid = _recorder_pid(bastion.person.uid)
        assert pid
        os.kill(pid, signal.SIGKILL)
        child.expect(MENU_FOOTER)
        session = closed_session(data_dir, tag)
        assert session.gaps  # type: ignore[attr-defined]
        assert commands_of(data_dir, tag) == expected
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
