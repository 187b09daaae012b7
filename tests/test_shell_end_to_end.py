"""audit-shell as the bastion account's ForceCommand, with everything real.

A throwaway sshd plays the bastion (the installer's Match block for a test
user), a second one the target host; a pexpect client logs into the bastion,
picks a host, runs commands and leaves, while the agent records them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness, shell_harness
from tests.shell_harness import MENU_FOOTER, TAG_RE, Bastion

pytestmark = [pytest.mark.root, pytest.mark.slow]

DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def bastion() -> Iterator[Bastion]:
    with shell_harness.bastion() as b:
        yield b


@pytest.fixture(scope="module")
def shell_config(bastion: Bastion) -> Path:
    return bastion.write_config("shell.toml")


@pytest.fixture(scope="module")
def bastion_sshd(bastion: Bastion, shell_config: Path) -> Iterator[harness.Sshd]:
    block = shell_harness.match_block(
        bastion.person.name, shell_config, bastion.audit_shell
    )
    with harness.sshd(bastion.workdir, extra_config=block) as server:
        yield server


@pytest.fixture(scope="module")
def agent(bastion: Bastion) -> Iterator[harness.AgentProcess]:
    data_dir = bastion.workdir / "data"
    with harness.agent(data_dir, "--config", str(bastion.agent_config)) as a:
        yield a


def session_of(data_dir: Path, tag: str):
    return harness.sessions_in(data_dir).get(tag)


def commands_of(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def wait_commands(agent: harness.AgentProcess, tag: str, expected: list[str]) -> None:
    """Wait for the agent to store `expected`; say what it did if it does not."""
    try:
        harness.wait_for(
            lambda: commands_of(agent.data_dir, tag) == expected, timeout=DEADLINE_S
        )
    except TimeoutError:
        raise AssertionError(
            f"stored {commands_of(agent.data_dir, tag)!r}, not {expected!r}; "
            f"agent log:\n{agent.log_text()[-3000:]}"
        ) from None


def pick(child, text: bytes) -> str:
    """Type a filter and Enter at the menu; the tag audit-shell announces."""
    child.send(text + b"\r")
    child.expect(TAG_RE)
    return child.match.group(1).decode()


def test_login_pick_host_run_commands_and_leave(
    bastion: Bastion, bastion_sshd: harness.Sshd, agent: harness.AgentProcess
) -> None:
    data_dir = agent.data_dir
    child = shell_harness.login(bastion, bastion_sshd)
    child.expect(MENU_FOOTER)
    assert b"web1" in child.before and b"db1" in child.before
    assert b"secret1" not in child.before  # not granted to this person
    tag = pick(child, b"web1")
    child.expect(harness.PROMPT)
    child.send(b"echo from-audit-shell\r")
    child.expect(b"from-audit-shell")
    child.expect(harness.PROMPT)
    child.send(b"id -un\r")
    child.expect(harness.PROMPT)
    wait_commands(agent, tag, ["echo from-audit-shell", "id -un"])
    child.sendeof()  # leaves the remote bash: back to the menu
    child.expect(MENU_FOOTER)
    child.expect(b"connection closed")
    child.sendeof()  # Ctrl-D at the menu: logged out
    child.expect(harness.pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    records = harness.export(data_dir, "--session", tag)
    for record in records:
        assert record["bastion_user"] == bastion.person.name
        assert record["remote_user"] == bastion.target_user.name
        assert record["host"] == "127.0.0.1"
        assert record["port"] == bastion.target.port
        assert record["origin"] == "audit-shell"
        assert record["inventory_host"] == "web1"
        assert record["remote_account"] == bastion.target_user.name
        assert record["client_addr"] == "127.0.0.1"
    session = harness.wait_for(
        lambda: (s := session_of(data_dir, tag)) and s.status == "closed" and s,
        timeout=DEADLINE_S,
    )
    assert session.ssh_pid != 0
    # The spool file is gone once the store holds the connection durably.
    harness.wait_for(lambda: not list(bastion.spool.iterdir()), timeout=DEADLINE_S)


def test_password_account_through_sshpass(
    bastion: Bastion, bastion_sshd: harness.Sshd, agent: harness.AgentProcess
) -> None:
    data_dir = agent.data_dir
    child = shell_harness.login(bastion, bastion_sshd)
    child.expect(MENU_FOOTER)
    tag = pick(child, b"db1")
    child.expect(harness.PROMPT)
    child.send(b"echo with-password\r")
    child.expect(harness.PROMPT)
    wait_commands(agent, tag, ["echo with-password"])
    # The password is on no command line on the bastion.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
    assert bastion.target_user.password not in ps.stdout
    child.sendeof()
    child.expect(MENU_FOOTER)
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()
    secret = bastion.target_user.password.encode()
    assert [
        p for p in data_dir.rglob("*") if p.is_file() and secret in p.read_bytes()
    ] == []


def test_keys_that_would_escape_do_nothing(
    bastion: Bastion, bastion_sshd: harness.Sshd
) -> None:
    child = shell_harness.login(bastion, bastion_sshd)
    child.expect(MENU_FOOTER)
    odd = [
        b"\x03",  # Ctrl-C
        b"\x1a",  # Ctrl-Z
        b"\x1c",  # Ctrl-\
        b"\x1b[200~bash\x1b[201~",  # a bracketed paste
        b"\x1b]0;title\x07\x1bOP\x1b[15;2~\x1b[999999999999999999999H",
        b"\xff\xfe\xc3\x28\xed\xa0\x80",  # not UTF-8
        b"a" * 20000,  # a very long line
        b"\x1b",
        b";bash -i\r",  # no such host: stays at the menu
    ]
    for data in odd:
        child.send(data)
        time.sleep(0.1)
    child.send(b"\x15zz-probe")  # Ctrl-U, then a filter we can see
    child.expect(b"zz-probe")
    child.expect(MENU_FOOTER)
    assert b"Traceback" not in child.before
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def shells_of(user: str) -> set[int]:
    import psutil

    return {
        p.pid
        for p in psutil.process_iter(["username", "cmdline"])
        if p.info["username"] == user
        and any("audit-shell" in a for a in p.info["cmdline"] or ())
    }


def test_dropped_connection_ends_audit_shell(
    bastion: Bastion, bastion_sshd: harness.Sshd
) -> None:
    before = shells_of(bastion.person.name)
    child = shell_harness.login(bastion, bastion_sshd)
    child.expect(MENU_FOOTER)
    ours = shells_of(bastion.person.name) - before
    assert ours
    child.close(force=True)  # the person's connection drops
    harness.wait_for(
        lambda: not ours & shells_of(bastion.person.name), timeout=DEADLINE_S
    )


@pytest.mark.parametrize(
    "command", [["bash"], ["bash", "-c", "echo pwned-$((6*7))"], ["-t", "bash"]]
)
def test_commands_are_refused(
    bastion: Bastion, bastion_sshd: harness.Sshd, command: list[str]
) -> None:
    options = ["-t"] if command[0] == "-t" else ["-T"]
    argv = harness.ssh_argv(bastion.person, bastion_sshd, *options)
    result = subprocess.run(
        ["ssh", *argv, *[c for c in command if c != "-t"]],
        input="echo pwned-$((6*7))\nexit\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "pwned-42" not in result.stdout + result.stderr
    assert "audit-shell: error: this account only offers the host menu" in (
        result.stdout + result.stderr
    )


def _transfer_options(bastion: Bastion, server: harness.Sshd) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "BatchMode=yes",
        "-i",
        str(bastion.person.key),
        "-o",
        "IdentitiesOnly=yes",
    ]


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "scp-O"])
def test_scp_is_refused(
    bastion: Bastion, bastion_sshd: harness.Sshd, tmp_path: Path, legacy: bool
) -> None:
    source = tmp_path / "payload.txt"
    source.write_text("payload\n")
    remote = f"/tmp/bastion-audit-scp-{bastion.person.name}-{legacy}"
    argv = ["scp", *(["-O"] if legacy else []), "-P", str(bastion_sshd.port)]
    argv += _transfer_options(bastion, bastion_sshd)
    for direction in (
        [str(source), f"{bastion.person.name}@127.0.0.1:{remote}"],
        [f"{bastion.person.name}@127.0.0.1:/etc/hostname", str(tmp_path / "got")],
    ):
        result = subprocess.run(
            argv + direction, capture_output=True, text=True, timeout=30
        )
        assert result.returncode != 0
    assert not Path(remote).exists()
    assert not (tmp_path / "got").exists()


def test_sftp_is_refused(bastion: Bastion, bastion_sshd: harness.Sshd) -> None:
    argv = ["sftp", "-P", str(bastion_sshd.port), "-b", "-"]
    argv += _transfer_options(bastion, bastion_sshd)
    result = subprocess.run(
        [*argv, f"{bastion.person.name}@127.0.0.1"],
        input="ls /\nget /etc/hostname\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "hostname" not in result.stdout


@pytest.mark.skipif(
    harness.shutil.which("rsync") is None, reason="rsync is not installed"
)
def test_rsync_is_refused(
    bastion: Bastion, bastion_sshd: harness.Sshd, tmp_path: Path
) -> None:
    ssh = " ".join(
        ["ssh", "-p", str(bastion_sshd.port), *_transfer_options(bastion, bastion_sshd)]
    )
    result = subprocess.run(
        [
            "rsync",
            "-e",
            ssh,
            f"{bastion.person.name}@127.0.0.1:/etc/hostname",
            str(tmp_path / "got"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert not (tmp_path / "got").exists()


def _banner_through(port: int) -> bytes:
    """What a connection to a forwarded port yields (an sshd says SSH-2.0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        try:
            return s.recv(64)
        except (TimeoutError, ConnectionResetError):
            return b""


def test_port_forwarding_is_refused(
    bastion: Bastion, bastion_sshd: harness.Sshd
) -> None:
    local = harness.free_port()
    argv = [
        "ssh",
        "-N",
        "-L",
        f"127.0.0.1:{local}:127.0.0.1:{bastion.target.port}",
        "-p",
        str(bastion_sshd.port),
        *_transfer_options(bastion, bastion_sshd),
        f"{bastion.person.name}@127.0.0.1",
    ]
    forward = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        harness.wait_for(lambda: harness._accepts(local), timeout=DEADLINE_S)
        assert not _banner_through(local).startswith(b"SSH-")
    finally:
        forward.terminate()
        _, err = forward.communicate(timeout=10)
    assert b"prohibited" in err
    # -W (stdio forwarding), as ProxyJump would use it.
    result = subprocess.run(
        [
            "ssh",
            "-W",
            f"127.0.0.1:{bastion.target.port}",
            "-p",
            str(bastion_sshd.port),
            *_transfer_options(bastion, bastion_sshd),
            f"{bastion.person.name}@127.0.0.1",
        ],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert b"SSH-2.0" not in result.stdout
    assert result.returncode != 0


def test_idle_at_the_menu_warns_then_logs_out(bastion: Bastion) -> None:
    config = bastion.write_config(
        "idle.toml", "idle_timeout_s = 3\nwarn_before_s = 2\n"
    )
    started = time.monotonic()
    child = shell_harness.run_as_person(bastion, config)
    child.expect(MENU_FOOTER)
    child.expect(b"idle: you will be logged out in 2 s")
    child.expect(harness.pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert 2.5 < time.monotonic() - started < 10


def test_time_limit_warns_then_cuts_a_live_session(
    bastion: Bastion, agent: harness.AgentProcess
) -> None:
    config = bastion.write_config(
        "limit.toml", "max_session_s = 8\nwarn_before_s = 3\n"
    )
    child = shell_harness.run_as_person(bastion, config)
    child.expect(MENU_FOOTER)
    tag = pick(child, b"web1")
    child.expect(harness.PROMPT)
    child.expect(rb"this login reaches its time limit in \d s")
    child.expect(b"reached its time limit: logging you out")
    child.expect(harness.pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    harness.wait_for(
        lambda: (s := session_of(agent.data_dir, tag)) and s.status == "closed",
        timeout=DEADLINE_S,
    )


def test_a_connection_whose_ssh_never_starts_is_recorded(
    bastion: Bastion, agent: harness.AgentProcess
) -> None:
    config = bastion.write_config("broken.toml", 'ssh = "/nonexistent/ssh"\n')
    child = shell_harness.run_as_person(bastion, config)
    child.expect(MENU_FOOTER)
    tag = pick(child, b"web1")
    child.expect(b"ssh could not be started")
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    child.close()
    session = harness.wait_for(
        lambda: session_of(agent.data_dir, tag), timeout=DEADLINE_S
    )
    assert (session.status, session.ssh_pid) == ("pending", 0)
    assert session.bastion_user == bastion.person.name
    listed = harness.run_cli(
        "audit-sessions",
        "--data-dir",
        str(agent.data_dir),
        "--format",
        "json",
        "--session",
        tag,
    )
    (record,) = json.loads(listed.stdout)
    assert record["origin"] == "audit-shell"
    assert record["inventory_host"] == "web1"
    assert record["remote_account"] == bastion.target_user.name
    assert harness.export(agent.data_dir, "--session", tag) == []  # no commands
