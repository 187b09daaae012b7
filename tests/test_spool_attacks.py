"""Nobody erases, forges or mixes a record through the spools (issue 14, 1 and 10).

Everything real: the agent, sshd, a tagged ssh in a pty, and an ordinary
account (not root) that writes into the spools (mode 1733, as installed) as
such a user would: a decoy recording (tests/spool_decoy.py), a file name
that would forge a log line, a connection record, someone else's tag.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from tests import harness, shell_harness

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
def intents(workdir: Path, tmp_path: Path) -> Path:
    path = workdir / f"{tmp_path.name}-intents"
    path.mkdir()
    path.chmod(0o1733)
    return path


@pytest.fixture
def agent(spool: Path, intents: Path, tmp_path: Path) -> Iterator[harness.AgentProcess]:
    config = tmp_path / "agent.toml"
    config.write_text(f'recordings_dir = "{spool}"\nintents_dir = "{intents}"\n')
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


@contextlib.contextmanager
def decoy_watcher(
    attacker: harness.TestUser, spool: Path, tag: str
) -> Iterator[Callable[[], str]]:
    """tests/spool_decoy.py watching for `tag`; the function waits for its claim."""
    watcher = subprocess.Popen(
        [*as_user(attacker), PYTHON, str(DECOY), "watch", str(spool), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def claimed() -> str:
        out, _ = watcher.communicate(timeout=WAIT_S)
        assert watcher.returncode == 0 and out.startswith(b"claimed"), out
        return out.decode()

    try:
        yield claimed
    finally:
        watcher.kill()
        watcher.wait()


def typed(
    child: pexpect.spawn, agent: harness.AgentProcess, tag: str, word: str
) -> None:
    """`echo WORD` at the prompt, seen on the screen and then in the store."""
    child.send(f"echo {word}\r".encode())
    child.expect(f"{word}\r\n".encode())
    child.expect(harness.PROMPT)
    wait_commands(agent, tag, f"echo {word}")


def test_a_decoy_naming_someone_elses_ssh_erases_nothing(
    server: harness.Sshd,
    user: harness.TestUser,
    attacker: harness.TestUser,
    spool: Path,
    agent: harness.AgentProcess,
) -> None:
    tag = "victim-1"
    with decoy_watcher(attacker, spool, tag) as claimed:
        child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
        )
        assert claimed().split() == ["claimed", str(child.pid)]
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(child.pid), timeout=10)
        typed(child, agent, tag, "victim-was-here")
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
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
    ssh = attacker_ssh(workdir, server, user, attacker, tag)
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


def attacker_ssh(
    workdir: Path,
    server: harness.Sshd,
    user: harness.TestUser,
    attacker: harness.TestUser,
    tag: str,
) -> list[str]:
    """An ssh to `user`@127.0.0.1 that the attacker may run: key and known_hosts."""
    key = workdir / f"{attacker.name}-key"
    known_hosts = workdir / f"{attacker.name}-known_hosts"
    if not key.exists():
        shutil.copy(user.key, key)
        os.chown(key, attacker.uid, -1)
        known_hosts.touch()
        os.chown(known_hosts, attacker.uid, -1)
    return [
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


def test_a_spool_file_name_forges_no_log_line(
    attacker: harness.TestUser, spool: Path, agent: harness.AgentProcess
) -> None:
    forged = "audit-agent: INFO: session victim-9 closed: ssh exited with 0, 5 commands"
    name = f"x\n{forged}\ny.chunks"
    code = "import sys; open(sys.argv[1], 'x').write('not a recording\\n')"
    subprocess.run(
        [*as_user(attacker), PYTHON, "-c", code, str(spool / name)], check=True
    )
    harness.wait_for(lambda: not (spool / name).exists(), timeout=WAIT_S)
    log = agent.log_text()
    assert "victim-9" in log  # named, on the line that says why it was refused
    assert forged not in log.splitlines()
    assert not any(line.startswith(forged[:30]) for line in log.splitlines())


def test_an_ordinary_users_connection_record_is_not_believed(
    server: harness.Sshd,
    attacker: harness.TestUser,
    intents: Path,
    agent: harness.AgentProcess,
) -> None:
    """Only audit-shell's accounts write records: anyone else could claim a
    client address, an inventory host, and (by the file's mtime) a time."""
    tag = "forged-1"
    record = {
        "v": 1,
        "tag": tag,
        "inventory_host": "db1",
        "address": "127.0.0.1",
        "port": server.port,
        "remote_account": "postgres",
        "client_addr": "10.9.8.7",
    }
    code = (
        "import json, os, sys\n"
        "path, text = sys.argv[1], sys.argv[2]\n"
        "open(path, 'x').write(text)\n"
        "os.utime(path, (978307200, 978307200))\n"  # 2001-01-01
    )
    path = intents / f"{tag}.json"
    subprocess.run(
        [*as_user(attacker), PYTHON, "-c", code, str(path), json.dumps(record)],
        check=True,
    )
    harness.wait_for(lambda: not path.exists(), timeout=WAIT_S)
    time.sleep(1.5)  # a store flush or two
    assert tag not in harness.sessions_in(agent.data_dir)
    assert f"uid {attacker.uid}" in agent.log_text()


def test_someone_elses_tag_gets_a_session_of_its_own(
    workdir: Path,
    server: harness.Sshd,
    user: harness.TestUser,
    attacker: harness.TestUser,
    agent: harness.AgentProcess,
) -> None:
    """`--session T` and the recording of T are T's, not every T~N's."""
    tag = "shared-1"
    mine = harness.open_tagged(user, server, tag)
    wait_for_session = harness.wait_for(
        lambda: harness.sessions_in(agent.data_dir).get(tag), timeout=WAIT_S
    )
    assert wait_for_session.ssh_pid == mine.pid
    ssh = attacker_ssh(workdir, server, user, attacker, tag)
    theirs = harness.spawn_ssh(
        [*as_user(attacker)[1:], *ssh],
        program="setpriv",
        env={"HOME": str(attacker.home)},
    )
    theirs.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(theirs.pid), timeout=10)
    for child, word in ((mine, "mine"), (theirs, "theirs")):
        child.send(f"echo typed-by-{word}\r".encode())
        child.expect(f"typed-by-{word}\r\n".encode())
        child.expect(harness.PROMPT)
    other = f"{tag}~2"
    wait_commands(agent, other, "echo typed-by-theirs")
    wait_commands(agent, tag, "echo typed-by-mine")
    assert commands_of(agent.data_dir, tag) == ["echo typed-by-mine"]
    for tool in (["audit-sessions", "--format", "jsonl"], ["audit-tail", "--json"]):
        result = harness.run_cli(
            tool[0],
            "--data-dir",
            str(agent.data_dir),
            "--session",
            tag,
            *tool[1:],
            *(["--no-follow"] if tool[0] == "audit-tail" else []),
        )
        assert result.returncode == 0, result.stderr
        assert "typed-by-theirs" not in result.stdout and other not in result.stdout
    for child in (mine, theirs):
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
    cast = harness.run_cli(
        "audit-export", "--data-dir", str(agent.data_dir), "--cast", tag
    )
    assert cast.returncode == 0, cast.stderr
    assert "typed-by-mine" in cast.stdout and "typed-by-theirs" not in cast.stdout


@pytest.fixture(scope="module")
def bastion() -> Iterator[shell_harness.Bastion]:
    with shell_harness.bastion() as b:
        yield b


def test_a_decoy_erases_no_audit_shell_connection(
    bastion: shell_harness.Bastion, attacker: harness.TestUser
) -> None:
    """The same race against a person at audit-shell's menu (ssh backend)."""
    data_dir = bastion.workdir / "decoy-data"
    args = ("--config", str(bastion.agent_config))
    config = bastion.write_config("decoy.toml")
    with harness.agent(data_dir, *args, poll_interval=0.5) as agent:
        with decoy_watcher(attacker, bastion.recordings, "as-*") as claimed:
            child = shell_harness.run_as_person(bastion, config)
            child.expect(shell_harness.MENU_FOOTER)
            child.send(b"web1\r")
            child.expect(shell_harness.TAG_RE)
            tag = child.match.group(1).decode()
            claimed()
            child.expect(harness.PROMPT)
            typed(child, agent, tag, "via-audit-shell")
            child.sendeof()
            child.expect(shell_harness.MENU_FOOTER)
            child.sendeof()
            child.expect(pexpect.EOF)
            child.close()
        session = harness.sessions_in(data_dir)[tag]
        assert (session.origin, session.recorder) == ("audit-shell", "strace")
        assert session.bastion_user == bastion.person.name
