"""scp and sftp through the bastion account: relayed to the granted host, recorded.

Real OpenSSH clients (scp in both protocols, sftp) log into a real bastion
sshd whose ForceCommand is audit-shell (the installer's own Match block),
which relays to a real target sshd; the real agent stores the records from
the recordings spool. The files are compared byte for byte on the target.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness, shell_harness
from tests.shell_harness import Bastion

pytestmark = [pytest.mark.root, pytest.mark.slow]

LIMIT = 1 << 20


@pytest.fixture(scope="module")
def bastion() -> Iterator[Bastion]:
    with shell_harness.bastion() as b:
        yield b


@pytest.fixture(scope="module")
def shell_config(bastion: Bastion) -> Path:
    t = bastion.target_user
    hosts = (
        f'[[host]]\nname = "web1"\naddress = "127.0.0.1"\n'
        f"port = {bastion.target.port}\n"
        f'  [[host.account]]\n  name = "{t.name}"\n  key_file = "{bastion.target_key}"\n'
        f'[[host]]\nname = "db1"\naddress = "127.0.0.1"\n'
        f"port = {bastion.target.port}\n"
        f'  [[host.account]]\n  name = "{t.name}"\n  key_file = "{bastion.target_key}"\n'
        f'[[host]]\nname = "shell1"\naddress = "127.0.0.1"\n'
        f"port = {bastion.target.port}\n"
        f'  [[host.account]]\n  name = "{t.name}"\n  key_file = "{bastion.target_key}"\n'
        f'[[grant]]\nusers = ["{bastion.person.name}"]\nhosts = ["web1"]\n'
        f'accounts = ["*"]\ntransfers = "both"\nmax_transfer_bytes = {LIMIT}\n'
        f'[[grant]]\nusers = ["{bastion.person.name}"]\nhosts = ["db1"]\n'
        f'accounts = ["*"]\ntransfers = "download"\n'
        f'[[grant]]\nusers = ["{bastion.person.name}"]\nhosts = ["shell1"]\n'
        f'accounts = ["*"]\n'
    )
    return bastion.write_config("transfers.toml", hosts=hosts)


@pytest.fixture(scope="module")
def bastion_sshd(bastion: Bastion, shell_config: Path) -> Iterator[harness.Sshd]:
    block = shell_harness.match_block(
        bastion.person.name, shell_config, bastion.audit_shell
    )
    with harness.sshd(bastion.workdir, shell_harness.SFTP_SUBSYSTEM + block) as server:
        yield server


@pytest.fixture(scope="module")
def agent(bastion: Bastion) -> Iterator[harness.AgentProcess]:
    data_dir = bastion.workdir / "data"
    with harness.agent(data_dir, "--config", str(bastion.agent_config)) as a:
        yield a


def client_options(bastion: Bastion, server: harness.Sshd, port_flag: str) -> list[str]:
    return [
        port_flag,
        str(server.port),
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


def scp(
    bastion: Bastion, server: harness.Sshd, legacy: bool, *args: str
) -> subprocess.CompletedProcess[str]:
    argv = ["scp", *(["-O"] if legacy else []), "-q"] + (
        ["-v"] if os.environ.get("SCP_V") else []
    )
    argv += client_options(bastion, server, "-P")
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=60)


def remote(bastion: Bastion, path: str) -> str:
    return f"{bastion.person.name}@127.0.0.1:{path}"


def payload(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(secrets.token_bytes(size))
    return path


def transfers(agent: harness.AgentProcess) -> list[dict]:
    return [r for r in harness.export(agent.data_dir) if r["kind"] == "transfer"]


def wait_transfer(agent: harness.AgentProcess, path: str, direction: str) -> dict:
    """The stored record of `path` moved in `direction`, once the agent has it.

    `path` is the host's, or its last part for a path an sftp client made
    absolute.
    """

    def found() -> dict | None:
        for r in transfers(agent):
            t = r["transfer"]
            if t["direction"] != direction:
                continue
            if t["path"] == path or t["path"].endswith("/" + path):
                return r
        return None

    try:
        return harness.wait_for(found, timeout=30)
    except TimeoutError:
        raise AssertionError(
            f"no {direction} of {path!r} stored; have {transfers(agent)!r}\n"
            f"agent log:\n{agent.log_text()[-3000:]}"
        ) from None


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "scp-O"])
def test_scp_upload_and_download_arrive_intact_and_are_recorded(
    bastion: Bastion,
    bastion_sshd: harness.Sshd,
    agent: harness.AgentProcess,
    tmp_path: Path,
    legacy: bool,
) -> None:
    name = f"up-{legacy}.bin"
    source = payload(tmp_path, name, 300_000)
    result = scp(
        bastion, bastion_sshd, legacy, str(source), remote(bastion, f"web1/~/{name}")
    )
    assert result.returncode == 0, result.stderr
    landed = bastion.target_user.home / name
    assert landed.read_bytes() == source.read_bytes()
    back = tmp_path / "back.bin"
    result = scp(
        bastion, bastion_sshd, legacy, remote(bastion, f"web1/~/{name}"), str(back)
    )
    assert result.returncode == 0, result.stderr
    assert back.read_bytes() == source.read_bytes()

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    up = wait_transfer(agent, name, "upload")
    down = wait_transfer(agent, name, "download")
    for record in (up, down):
        t = record["transfer"]
        assert (t["size"], t["sha256"], t["outcome"]) == (300_000, digest, "complete")
        assert record["bastion_user"] == bastion.person.name
        assert record["remote_user"] == bastion.target_user.name
        assert record["origin"] == "audit-shell"
        assert record["recorder"] == "paramiko"
    assert up["command"] == f"upload {name}"


def test_sftp_session_browses_the_granted_hosts_and_moves_files(
    bastion: Bastion,
    bastion_sshd: harness.Sshd,
    agent: harness.AgentProcess,
    tmp_path: Path,
) -> None:
    source = payload(tmp_path, "sftp-up.bin", 70_000)
    got = tmp_path / "sftp-got.bin"
    batch = (
        f"ls /\ncd /web1/~\nput {source} sftp-up.bin\nget sftp-up.bin {got}\nls -l\n"
    )
    argv = ["sftp", *client_options(bastion, bastion_sshd, "-P"), "-b", "-"]
    result = subprocess.run(
        [*argv, f"{bastion.person.name}@127.0.0.1"],
        input=batch,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = result.stdout
    assert "web1" in listing and "db1" in listing
    assert "shell1" not in listing  # granted a terminal, not transfers
    assert got.read_bytes() == source.read_bytes()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    for direction in ("upload", "download"):
        t = wait_transfer(agent, "sftp-up.bin", direction)["transfer"]
        assert (t["size"], t["sha256"], t["outcome"]) == (70_000, digest, "complete")


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "scp-O"])
def test_refused_transfers_are_refused_and_recorded(
    bastion: Bastion,
    bastion_sshd: harness.Sshd,
    agent: harness.AgentProcess,
    tmp_path: Path,
    legacy: bool,
) -> None:
    small = payload(tmp_path, f"small-{legacy}.bin", 1000)
    big = payload(tmp_path, f"big-{legacy}.bin", LIMIT + 1)
    # db1 grants downloads only.
    result = scp(
        bastion,
        bastion_sshd,
        legacy,
        str(small),
        remote(bastion, f"db1/~/{small.name}"),
    )
    assert result.returncode != 0
    # scp -O prints audit-shell's own line; SFTP carries only the status code.
    assert ("not granted" if legacy else "Permission denied") in result.stderr
    assert not (bastion.target_user.home / small.name).exists()
    t = wait_transfer(agent, small.name, "upload")["transfer"]
    assert t["outcome"] == "refused" and "not granted" in t["reason"]
    # Over the grant's size limit.
    result = scp(
        bastion, bastion_sshd, legacy, str(big), remote(bastion, f"web1/~/{big.name}")
    )
    assert result.returncode != 0
    landed = bastion.target_user.home / big.name
    assert not landed.exists() or landed.stat().st_size <= LIMIT
    t = wait_transfer(agent, big.name, "upload")["transfer"]
    assert t["outcome"] == "refused" and "limit" in t["reason"]
    # A path that climbs out.
    result = scp(
        bastion, bastion_sshd, legacy, str(small), remote(bastion, "web1/../db1/x")
    )
    assert result.returncode != 0


def test_hostile_scp_commands_never_reach_a_shell(
    bastion: Bastion,
    bastion_sshd: harness.Sshd,
    agent: harness.AgentProcess,
    tmp_path: Path,
) -> None:
    canary = Path(f"/tmp/bastion-audit-pwned-{bastion.person.name}")
    ssh = [
        "ssh",
        *client_options(bastion, bastion_sshd, "-p"),
        f"{bastion.person.name}@127.0.0.1",
    ]
    for command in (
        f"scp -t web1/x;touch${{IFS}}{canary}",
        f"scp -t web1/$(touch {canary})",
        "scp -S /bin/sh -t web1/x",
        "scp -t -f web1/x",
    ):
        result = subprocess.run(
            [*ssh, command], input="", capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 3, (command, result.stderr)  # REFUSED
        assert "refused" in result.stderr, (command, result.stderr)
    assert not canary.exists()
    # Not a transfer at all: refused as before, whatever the grants.
    result = subprocess.run(
        [*ssh, "bash -c id"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "commands, scp, sftp and rsync are refused" in result.stderr
    os.sync()
