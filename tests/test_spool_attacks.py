"""Nobody erases a session through the paramiko recordings spool (issue 14, 1).

Everything real: the agent, sshd, a tagged ssh in a pty, and an ordinary
account (not root) that writes its decoy into the spool (mode 1733, as
installed) with tests/spool_decoy.py, as such a user would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

DECOY = Path(__file__).with_name("spool_decoy.py")
PYTHON = "/usr/bin/python3"  # one an ordinary account may run
WAIT_S = 20.0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """World-traversable, unlike pytest's tmp_path: the attacker reaches the spool."""
    with harness.shared_dir("bastion-audit-spool.") as path:
        yield path


@pytest.fixture(scope="module")
def attacker(workdir: Path) -> Iterator[harness.TestUser]:
    with harness.test_user(workdir, prefix="bam") as u:
        yield u


@pytest.fixture
def spool(workdir: Path, tmp_path: Path) -> Path:
    path = workdir / tmp_path.name
    path.mkdir()
    path.chmod(0o1733)
    return path


@pytest.fixture
def agent(spool: Path, tmp_path: Path) -> Iterator[harness.AgentProcess]:
    config = tmp_path / "agent.toml"
    config.write_text(f'recordings_dir = "{spool}"\n')
    # Discovery each half second: the ~100-300 ms before a strace log exists,
    # widened, so that the decoy is in first on the code this test guards.
    with harness.agent(
        tmp_path / "data", "--config", str(config), poll_interval=0.5
    ) as a:
        yield a


def as_user(user: harness.TestUser) -> list[str]:
    gid = pwd.getpwnam(user.name).pw_gid
    return ["setpriv", f"--reuid={user.uid}", f"--regid={gid}", "--init-groups"]


def commands_of(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def wait_commands(agent: harness.AgentProcess, tag: str, expected: str) -> None:
    try:
        harness.wait_for(
            lambda: expected in commands_of(agent.data_dir, tag), timeout=WAIT_S
        )
    except TimeoutError:
        stored = harness.sessions_in(agent.data_dir)
        raise AssertionError(
            f"{expected!r} not stored under {tag}: {commands_of(agent.data_dir, tag)}"
            f"\nsessions: {stored}\n{agent.log_text()[-3000:]}"
        ) from None


def test_a_decoy_naming_someone_elses_ssh_erases_nothing(
    server: harness.Sshd,
    user: harness.TestUser,
    attacker: harness.TestUser,
    spool: Path,
    agent: harness.AgentProcess,
) -> None:
    tag = "victim-1"
    watcher = subprocess.Popen(
        [*as_user(attacker), PYTHON, str(DECOY), "watch", str(spool), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
        )
        out, _ = watcher.communicate(timeout=WAIT_S)
        assert watcher.returncode == 0, out
        assert out.decode().split() == ["claimed", str(child.pid)]
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(child.pid), timeout=10)
        child.send(b"echo victim-was-here\r")
        child.expect(b"victim-was-here\r\n")
        child.expect(harness.PROMPT)
        wait_commands(agent, tag, "echo victim-was-here")
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
    finally:
        watcher.kill()
        watcher.wait()
    victim = harness.wait_for(
        lambda: (
            (s := harness.sessions_in(agent.data_dir).get(tag))
            and s.status == "closed"
            and s
        ),
        timeout=WAIT_S,
    )
    assert (victim.bastion_user, victim.recorder) == ("root", "strace")
    assert victim.end_reason != "decoy"
    # The decoy was refused, not stored under anyone's name.
    claims = [
        s
        for s in harness.sessions_in(agent.data_dir).values()
        if s.ssh_pid == child.pid and s.id != tag
    ]
    assert claims == []
    assert list((agent.data_dir / "quarantine").glob("decoy.chunks.*"))
    assert "decoy.chunks" in agent.log_text()


def test_a_decoy_held_by_ones_own_ssh_does_not_hide_its_session(
    workdir: Path,
    server: harness.Sshd,
    user: harness.TestUser,
    attacker: harness.TestUser,
    spool: Path,
    agent: harness.AgentProcess,
) -> None:
    """The ssh holds the decoy open, so the recording "is" its own: the
    root-written strace log of that ssh still wins."""
    tag = "hidden-1"
    key = workdir / f"{attacker.name}-key"
    shutil.copy(user.key, key)
    os.chown(key, attacker.uid, -1)
    known_hosts = workdir / f"{attacker.name}-known_hosts"
    known_hosts.touch()
    os.chown(known_hosts, attacker.uid, -1)
    ssh = [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(server.port),
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"SetEnv=AUDIT_SESSION={tag}",
        f"{user.name}@127.0.0.1",
    ]
    argv = [*as_user(attacker), PYTHON, str(DECOY), "own", str(spool), tag, "--"]
    child = harness.spawn_ssh(
        [*argv[1:], *ssh], program=argv[0], env={"HOME": str(attacker.home)}
    )
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(child.pid), timeout=10)
    child.send(b"echo hidden-by-decoy\r")
    child.expect(b"hidden-by-decoy\r\n")
    child.expect(harness.PROMPT)
    stored = harness.wait_for(
        lambda: next(
            (
                s
                for s in harness.sessions_in(agent.data_dir).values()
                if s.ssh_pid == child.pid and s.recorder == "strace"
            ),
            None,
        ),
        timeout=WAIT_S,
    )
    wait_commands(agent, stored.id, "echo hidden-by-decoy")
    assert stored.bastion_user == attacker.name
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
