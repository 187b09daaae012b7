"""scripts/install-shell.sh against an sshd config of our own (never /etc/ssh)."""

from __future__ import annotations

import grp
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.inventory import load_shell_config
from tests import harness, shell_harness

pytestmark = pytest.mark.root


@pytest.fixture
def setup() -> Iterator[tuple[Path, harness.TestUser, Path]]:
    workdir = Path(tempfile.mkdtemp(prefix="bastion-audit-install."))
    try:
        workdir.chmod(0o755)
        with harness.test_user(workdir, prefix="bin") as user:
            yield workdir, user, shell_harness.launcher(workdir, user.uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def install(workdir: Path, user: str, audit_shell: Path, *extra: str):
    return subprocess.run(
        [
            str(shell_harness.INSTALLER),
            "--user",
            user,
            "--audit-shell",
            str(audit_shell),
            "--config",
            str(workdir / "etc" / "shell.toml"),
            "--intents-dir",
            str(workdir / "spool" / "intents"),
            "--dropin",
            str(workdir / "sshd_config.d" / "audit-shell.conf"),
            "--sshd-config",
            str(workdir / "sshd_config"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_main_config(workdir: Path, include: bool) -> None:
    key = workdir / "host_key"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
        )
    (workdir / "sshd_config.d").mkdir(exist_ok=True)
    (workdir / "sshd_config").write_text(
        (f"Include {workdir}/sshd_config.d/*.conf\n" if include else "")
        + f"HostKey {key}\nAllowTcpForwarding yes\n"
    )


def effective(workdir: Path, user: str) -> dict[str, str]:
    out = subprocess.run(
        [
            harness.SSHD,
            "-T",
            "-f",
            str(workdir / "sshd_config"),
            "-C",
            f"user={user},host=localhost,addr=127.0.0.1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_install_writes_the_block_the_tests_use(setup) -> None:
    workdir, user, audit_shell = setup
    write_main_config(workdir, include=True)
    result = install(workdir, user.name, audit_shell)
    assert result.returncode == 0, result.stderr
    dropin = workdir / "sshd_config.d" / "audit-shell.conf"
    config = workdir / "etc" / "shell.toml"
    assert dropin.read_text() == shell_harness.match_block(
        user.name, config, audit_shell
    )
    mine = effective(workdir, user.name)
    assert mine["forcecommand"] == f"{audit_shell} --config {config}"
    assert (mine["disableforwarding"], mine["permittty"]) == ("yes", "yes")
    assert effective(workdir, "someoneelse")["forcecommand"] == "none"
    for name in ("intents", "recordings"):  # recordings: beside intents by default
        spool = os.stat(workdir / "spool" / name)
        assert (spool.st_mode & 0o7777, spool.st_uid) == (0o1733, 0)
    st = os.stat(config)
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, user_gid(user))
    assert load_shell_config(config).hosts == ()
    # Idempotent, and --uninstall takes the drop-in out.
    assert install(workdir, user.name, audit_shell).returncode == 0
    assert install(workdir, user.name, audit_shell, "--uninstall").returncode == 0
    assert not dropin.exists()


def user_gid(user: harness.TestUser) -> int:
    import pwd

    return pwd.getpwnam(user.name).pw_gid


def test_a_block_sshd_would_not_apply_is_taken_back(setup) -> None:
    workdir, user, audit_shell = setup
    write_main_config(workdir, include=False)  # the drop-in dir is not included
    result = install(workdir, user.name, audit_shell)
    assert result.returncode == 2
    assert "would not give" in result.stderr
    assert list((workdir / "sshd_config.d").iterdir()) == []


def test_unsafe_values_and_unreachable_program_are_refused(setup) -> None:
    workdir, user, audit_shell = setup
    write_main_config(workdir, include=True)
    bad = install(workdir, user.name, Path("/tmp/a b/audit-shell"))
    assert bad.returncode == 2 and "unsafe path" in bad.stderr
    assert install(workdir, "Bad;Name", audit_shell).returncode == 2
    hidden = workdir / "private"
    hidden.mkdir(mode=0o700)
    shutil.copy(audit_shell, hidden / "audit-shell")
    result = install(workdir, user.name, hidden / "audit-shell")
    assert result.returncode == 2 and "cannot run" in result.stderr


@pytest.mark.slow
def test_web_accounts_read_the_shells_inventory(setup) -> None:
    """make install WEB=1 after install-shell.sh: audit-web and its terminal
    read the same shell.toml (0640 root:<the bastion account's group>)."""
    from tests.test_install import make, temp_paths

    workdir, user, audit_shell = setup
    write_main_config(workdir, include=True)
    paths = temp_paths(workdir / "root")
    config = paths["SYSCONFDIR"] / "shell.toml"
    assert (
        install(workdir, user.name, audit_shell, "--config", str(config)).returncode
        == 0
    )
    before = config.read_text()
    suffix = secrets.token_hex(3)
    accounts = [f"WEB_USER=bww{suffix}", f"TERM_USER=bwx{suffix}"]
    try:
        result = make("install", paths, "WEB=1", *accounts)
        assert result.returncode == 0, result.stdout + result.stderr
        group = grp.getgrgid(user_gid(user)).gr_name
        assert f"read it as members of {group}" in result.stdout
        assert config.read_text() == before  # the shell's own, kept as it is
        for account in (f"bww{suffix}", f"bwx{suffix}"):
            read = subprocess.run(
                ["runuser", "-u", account, "--", "cat", str(config)],
                capture_output=True,
                text=True,
            )
            assert read.returncode == 0, read.stderr
        result = make("uninstall", paths, "PURGE=1")
        assert config.read_text() == before  # not ours: left alone
        assert f"kept {config}: this install did not write it" in result.stdout
    finally:
        make("uninstall", paths, "PURGE=1")
        for account in (f"bww{suffix}", f"bwx{suffix}"):
            subprocess.run(["userdel", "-r", account], capture_output=True)
