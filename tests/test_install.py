"""make install / make uninstall, into a temporary root, and the unit's command line.

Every path of the install is moved under a temporary directory, so nothing
of the machine is touched and concurrent runs cannot collide. systemd does not
run here: the unit is checked with systemd-analyze, and its ExecStart= is run
as systemd would run it: a clean environment, no new privileges, the unit's
capability bounding set (setpriv), SIGTERM to stop.

BASTION_AUDIT_REAL_INSTALL=1 also installs to the real paths once (only when
none of them exists) and removes everything again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

UNIT = "bastion-audit.service"
COMMANDS = (
    "audit-agent",
    "audit-export",
    "audit-replay",
    "audit-sessions",
    "audit-tail",
)
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Install:
    root: Path
    paths: dict[str, Path]
    output: str

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]

    @property
    def unit(self) -> dict[str, list[str]]:
        """The unit's settings, key -> values in order."""
        settings: dict[str, list[str]] = {}
        for line in (self["UNITDIR"] / UNIT).read_text().splitlines():
            if "=" in line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
        return settings


def make(
    target: str, paths: dict[str, Path], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(harness.REPO), target]
        + [f"{k}={v}" for k, v in paths.items()]
        + list(extra),
        capture_output=True,
        text=True,
        timeout=900,
    )


def temp_paths(root: Path) -> dict[str, Path]:
    return {
        "PREFIX": root / "opt/bastion-audit",
        "BINDIR": root / "usr/local/bin",
        "SYSCONFDIR": root / "etc/bastion-audit",
        "UNITDIR": root / "etc/systemd/system",
        "SUDOERSDIR": root / "etc/sudoers.d",
        "LIBEXECDIR": root / "usr/local/lib/bastion-audit",
        "DATA_DIR": root / "var/lib/bastion-audit",
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("root")
    root.chmod(0o755)
    paths = temp_paths(root)
    result = make("install", paths)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield Install(root, paths, result.stdout)
    finally:
        make("uninstall", paths, "PURGE=1")


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_install_puts_each_piece_in_place(installed: Install) -> None:
    for command in COMMANDS:
        link = installed["BINDIR"] / command
        assert link.is_symlink() and os.readlink(link) == str(
            installed["PREFIX"] / "bin" / command
        )
    assert (installed["PREFIX"] / "pyvenv.cfg").is_file()
    tracker = installed["LIBEXECDIR"] / "session_tracker.sh"
    assert (mode(tracker), tracker.stat().st_uid) == (0o755, 0)
    assert f"DEFAULT_DATA_DIR={installed['DATA_DIR']}\n" in tracker.read_text()
    sudoers = installed["SUDOERSDIR"] / "zxy"
    assert (mode(sudoers), sudoers.stat().st_uid) == (0o440, 0)
    assert f"NOPASSWD: {tracker} ^" in sudoers.read_text()
    check = subprocess.run(
        ["visudo", "-cf", str(sudoers)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    config = installed["SYSCONFDIR"] / "agent.toml"
    assert mode(config) == 0o644
    with open(config, "rb") as f:
        assert tomllib.load(f) == {"data_dir": str(installed["DATA_DIR"])}
    data_dir = installed["DATA_DIR"]
    assert (mode(data_dir), data_dir.stat().st_uid) == (0o700, 0)
    assert (installed["PREFIX"] / "share/doc/bastion-audit/README.md").is_file()


def test_the_unit_is_a_hardened_service_that_may_ptrace(installed: Install) -> None:
    unit = installed.unit
    assert unit["ExecStart"] == [
        f"{installed['PREFIX']}/bin/audit-agent run --config "
        f"{installed['SYSCONFDIR']}/agent.toml"
    ]
    assert unit["Restart"] == ["on-failure"]
    assert unit["KillMode"] == ["process"]  # straces outlive a crash, are adopted
    assert unit["ReadWritePaths"] == [
        str(installed["DATA_DIR"]),
        "-/var/spool/bastion-audit",
    ]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert "CAP_SYS_PTRACE" in unit["CapabilityBoundingSet"][0].split()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(installed["UNITDIR"] / UNIT)],
        capture_output=True,
        text=True,
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    # The syscall filter lets strace work: expand its groups as systemd does.
    allowed = expand_syscall_groups(unit["SystemCallFilter"][0].split())
    for syscall in ("ptrace", "process_vm_readv", "wait4", "kill", "inotify_init1"):
        assert syscall in allowed, syscall


def expand_syscall_groups(names: list[str]) -> set[str]:
    found: set[str] = set()
    todo = list(names)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not name.startswith("@"):
            found.add(name)
            continue
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines()[1:]:
            word = line.strip()
            if word and not word.startswith("#"):
                todo.append(word)
    return found


def unit_command(installed: Install) -> list[str]:
    """ExecStart= under the unit's NoNewPrivileges and CapabilityBoundingSet."""
    unit = installed.unit
    caps = unit["CapabilityBoundingSet"][0].split()
    bounding = "-all," + ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
    argv = ["setpriv", "--bounding-set", bounding]
    if unit["NoNewPrivileges"] == ["yes"]:
        argv.append("--no-new-privs")
    return [*argv, *shlex.split(unit["ExecStart"][0])]


def test_the_units_command_line_audits_and_stops_on_sigterm(
    installed: Install, user: harness.TestUser, server: harness.Sshd
) -> None:
    config = installed["SYSCONFDIR"] / "agent.toml"
    data_dir = installed["DATA_DIR"]
    bindir = installed["BINDIR"]
    log = installed.root / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            # Plus a scope: other suites on this machine have tagged sessions too.
            [*unit_command(installed), "--scope-pid", str(os.getpid())],
            env={"PATH": SYSTEMD_PATH},  # as systemd starts it: nothing inherited
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    tag = f"unit-{secrets.token_hex(3)}"
    try:
        harness.wait_for(lambda: (data_dir / "status.json").exists(), timeout=20)
        child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
        )
        pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"echo from-the-unit\r")
        child.expect(harness.PROMPT)

        def exported() -> list[str]:
            result = subprocess.run(
                [
                    str(bindir / "audit-export"),
                    "--config",
                    str(config),
                    "--format",
                    "jsonl",
                    "--session",
                    tag,
                ],
                capture_output=True,
                text=True,
                env={"PATH": SYSTEMD_PATH},
            )
            return [json.loads(line)["command"] for line in result.stdout.splitlines()]

        harness.wait_for(lambda: exported() == ["echo from-the-unit"], timeout=20)
        status = subprocess.run(
            [str(bindir / "audit-agent"), "status", "--config", str(config)],
            capture_output=True,
            text=True,
        )
        assert status.returncode == 0, status.stdout + log.read_text()
        child.sendeof()
        child.close()
    finally:
        agent.send_signal(signal.SIGTERM)  # systemd's KillSignal
        code = agent.wait(timeout=30)  # TimeoutStopSec
    assert code == 0, log.read_text()
    status = subprocess.run(
        [str(bindir / "audit-agent"), "status", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 4 and "stopped at" in status.stdout


def test_reinstall_keeps_the_operators_config(installed: Install) -> None:
    config = installed["SYSCONFDIR"] / "agent.toml"
    mine = config.read_text() + "poll_interval_s = 0.5\n"
    config.write_text(mine)
    result = make("install", installed.paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert config.read_text() == mine
    assert (installed["SYSCONFDIR"] / "agent.toml.new").exists()
    assert f"kept your {config}" in result.stdout


def test_uninstall_removes_all_but_the_data(installed: Install) -> None:
    data = installed["DATA_DIR"]
    assert data.exists() and any(data.iterdir())  # the agent above wrote there
    result = make("uninstall", installed.paths)
    assert result.returncode == 0, result.stdout + result.stderr
    left = sorted(
        str(p.relative_to(installed.root))
        for p in installed.root.rglob("*")
        if p.is_file() or p.is_symlink()
    )
    assert all(
        name.startswith("var/lib/bastion-audit/") or name == "agent.log"
        for name in left
    ), left
    result = make("uninstall", installed.paths, "PURGE=1")
    assert result.returncode == 0
    assert not data.exists()


def test_install_refuses_paths_it_would_not_remove_whole(tmp_path: Path) -> None:
    paths = temp_paths(tmp_path)
    paths["PREFIX"] = tmp_path / "opt"
    result = make("install", paths)
    assert result.returncode != 0
    assert "its last part must name bastion-audit" in result.stderr
    assert not (tmp_path / "opt").exists()


REAL = {
    "PREFIX": Path("/opt/bastion-audit"),
    "BINDIR": Path("/usr/local/bin"),
    "SYSCONFDIR": Path("/etc/bastion-audit"),
    "UNITDIR": Path("/etc/systemd/system"),
    "SUDOERSDIR": Path("/etc/sudoers.d"),
    "LIBEXECDIR": Path("/usr/local/lib/bastion-audit"),
    "DATA_DIR": Path("/var/lib/bastion-audit"),
}


@pytest.mark.skipif(
    os.environ.get("BASTION_AUDIT_REAL_INSTALL") != "1",
    reason="installs to the real paths: set BASTION_AUDIT_REAL_INSTALL=1",
)
def test_real_paths_install_and_uninstall() -> None:
    """Only when nothing of ours is there; a data dir already there is kept."""
    import fcntl

    ours = [
        REAL["PREFIX"],
        REAL["SYSCONFDIR"],
        REAL["LIBEXECDIR"] / "session_tracker.sh",  # the dir may hold others' files
        REAL["UNITDIR"] / UNIT,
        REAL["SUDOERSDIR"] / "zxy",
        *[REAL["BINDIR"] / c for c in COMMANDS],
    ]
    with open("/run/lock/bastion-audit-real-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one real install at a time
        present = [p for p in ours if p.exists() or p.is_symlink()]
        if present:
            pytest.skip(f"already there, not touching: {present}")
        data_was_there = REAL["DATA_DIR"].exists()
        modes = {d: mode(REAL[d]) for d in ("SUDOERSDIR", "BINDIR") if REAL[d].exists()}
        try:
            result = make("install", {})
            assert result.returncode == 0, result.stdout + result.stderr
            link = REAL["BINDIR"] / "audit-agent"
            assert link.resolve() == (REAL["PREFIX"] / "bin/audit-agent").resolve()
            verify = subprocess.run(
                ["systemd-analyze", "verify", str(REAL["UNITDIR"] / UNIT)],
                capture_output=True,
                text=True,
            )
            assert (verify.returncode, verify.stderr) == (0, "")
            check = subprocess.run(
                ["visudo", "-cf", str(REAL["SUDOERSDIR"] / "zxy")], capture_output=True
            )
            assert check.returncode == 0
            status = subprocess.run(
                [str(link), "status", "--data-dir", str(REAL["DATA_DIR"])],
                capture_output=True,
                text=True,
            )
            assert status.returncode == 4  # installed, not started: no systemd here
            assert {d: mode(REAL[d]) for d in modes} == modes
        finally:
            result = make("uninstall", {}, *([] if data_was_there else ["PURGE=1"]))
        assert result.returncode == 0, result.stderr
        assert [p for p in ours if p.exists() or p.is_symlink()] == []
        assert REAL["DATA_DIR"].exists() == data_was_there
        assert re.search(r"removed everything", result.stdout)
