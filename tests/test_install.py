"""make install / make uninstall, into a temporary root, and the units' command lines.

Every path of the install is moved under a temporary directory (or staged
under DESTDIR), so nothing of the machine is touched and concurrent runs
cannot collide; audit-web's two accounts are throwaway ones. systemd does not
run here: the units are checked with systemd-analyze, and their ExecStart= is
run as systemd would run it: a clean environment, the unit's user, no new
privileges, the unit's capability bounding set (setpriv), SIGTERM to stop.

BASTION_AUDIT_REAL_INSTALL=1 also installs to the real paths once (only when
none of them exists) and removes everything again.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

UNIT = "bastion-audit.service"
WEB_UNIT = "audit-web.service"
COMMANDS = (
    "audit-agent",
    "audit-export",
    "audit-replay",
    "audit-sessions",
    "audit-shell",
    "audit-tail",
    "audit-web",
)
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Install:
    root: Path
    paths: dict[str, Path]
    output: str
    accounts: dict[str, str]  # WEB_USER, TERM_USER: throwaway ones

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]

    @property
    def unit(self) -> dict[str, list[str]]:
        return unit_settings(self["UNITDIR"] / UNIT)

    @property
    def web_unit(self) -> dict[str, list[str]]:
        return unit_settings(self["UNITDIR"] / WEB_UNIT)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """A unit's settings, key -> values in order."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
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
        "WEB_STATE_DIR": root / "var/lib/bastion-audit-web",
        "PAMDIR": root / "etc/pam.d",
        "INTENTS_DIR": root / "var/spool/bastion-audit/intents",
    }


@pytest.fixture(scope="module")
def installed() -> Iterator[Install]:
    """Everything: the agent, audit-web (WEB=1) and the sudo mode (SUDO_MODE=1)."""
    # Not under pytest's own temporary directory (0700): audit-web's account
    # must reach its venv and its configuration.
    root = Path(tempfile.mkdtemp(prefix="bastion-audit-install."))
    root.chmod(0o755)
    paths = temp_paths(root)
    suffix = secrets.token_hex(3)
    accounts = {"WEB_USER": f"bww{suffix}", "TERM_USER": f"bwx{suffix}"}
    flags = [f"{k}={v}" for k, v in accounts.items()] + ["WEB=1", "SUDO_MODE=1"]
    try:
        result = make("install", paths, *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        yield Install(root, paths, result.stdout, accounts)
    finally:
        make("uninstall", paths, "PURGE=1", *flags[:2])
        for name in accounts.values():
            subprocess.run(["userdel", "-r", name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


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
    web_user = installed.accounts["WEB_USER"]
    with open(config, "rb") as f:
        assert tomllib.load(f) == {
            "data_dir": str(installed["DATA_DIR"]),
            "web_intents_user": web_user,  # the agent trusts audit-web's records
            "read_group": web_user,  # and shares the store with it, for the console
        }
    data_dir = installed["DATA_DIR"]
    assert (mode(data_dir), data_dir.stat().st_uid) == (0o700, 0)
    assert (installed["PREFIX"] / "share/doc/bastion-audit/README.md").is_file()


def test_web_installs_its_account_config_pam_service_and_terminal(
    installed: Install,
) -> None:
    from agent.web_config import load_web_config

    web_user, term_user = (
        installed.accounts["WEB_USER"],
        installed.accounts["TERM_USER"],
    )
    entry = pwd.getpwnam(web_user)
    assert "shadow" in {g.gr_name for g in grp.getgrall() if web_user in g.gr_mem}
    assert entry.pw_shell == "/usr/sbin/nologin" and entry.pw_uid != 0
    assert pwd.getpwnam(term_user).pw_shell == "/usr/sbin/nologin"
    state = installed["WEB_STATE_DIR"]
    assert (mode(state), state.stat().st_uid) == (0o700, entry.pw_uid)
    config = load_web_config(installed["SYSCONFDIR"] / "shell.toml")
    assert config.shell.hosts == ()  # an example: no hosts yet
    assert (config.web.state_dir, config.web.terminal_user) == (state, term_user)
    assert config.web.agent_config == installed["SYSCONFDIR"] / "agent.toml"
    assert (installed["PAMDIR"] / "audit-web").read_text() == (
        "@include common-auth\n@include common-account\n"
    )
    terminal = installed["LIBEXECDIR"] / "web-terminal"
    assert terminal.read_text() == (
        f"#!/bin/sh\nexec {installed['PREFIX']}/bin/audit-shell --token-login "
        f"--config {installed['SYSCONFDIR']}/shell.toml\n"
    )
    web = installed.web_unit
    assert (web["User"], web["SupplementaryGroups"]) == ([web_user], ["shadow"])
    assert web["NoNewPrivileges"] == ["yes"] and web["CapabilityBoundingSet"] == [""]
    if shutil.which("systemd-analyze") is not None:
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(installed["UNITDIR"] / WEB_UNIT)],
            capture_output=True,
            text=True,
        )
        assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


def test_the_web_units_command_line_serves_the_sign_in_page_as_its_account(
    installed: Install,
) -> None:
    """ExecStart= as its User= with its groups, no privileges; the page answers."""
    web_user = installed.accounts["WEB_USER"]
    entry = pwd.getpwnam(web_user)
    run_dir = installed.root / "run/bastion-audit-web"  # systemd's RuntimeDirectory=
    run_dir.mkdir(parents=True)
    os.chown(run_dir, entry.pw_uid, entry.pw_gid)
    shell_config = installed["SYSCONFDIR"] / "shell.toml"
    shell_config.write_text(  # the operator's edit: uninstall keeps it
        shell_config.read_text().replace(
            "/run/bastion-audit-web/redeem.sock", f"{run_dir}/redeem.sock"
        )
    )
    port = harness.free_port()
    web = installed.web_unit
    argv = [
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--groups=" + ",".join(web["SupplementaryGroups"][0].split()),
        "--bounding-set=-all",
        "--no-new-privs",
        *shlex.split(web["ExecStart"][0]),
        "--port",
        str(port),
    ]
    log = installed.root / "audit-web.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            env={"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"},
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
    try:
        page = harness.wait_for(
            lambda: sign_in_page(port) or process.poll() is not None, timeout=30
        )
        assert process.poll() is None, log.read_text()
        assert "Bastion sign-in" in page
        assert (run_dir / "redeem.sock").exists()
        assert (installed["WEB_STATE_DIR"] / "secret_key").stat().st_uid == entry.pw_uid
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()


def sign_in_page(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sign-in", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


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


def test_uninstall_removes_all_but_the_data_and_keeps_edited_configs(
    installed: Install,
) -> None:
    data = installed["DATA_DIR"]
    assert data.exists() and any(data.iterdir())  # the agent above wrote there
    etc = installed["SYSCONFDIR"]
    result = make("uninstall", installed.paths)
    assert result.returncode == 0, result.stdout + result.stderr
    # Both configurations were edited above: kept, renamed, and said so.
    for name in ("agent.toml", "shell.toml"):
        assert f"kept your edited {etc / name} as {etc / name}.save" in result.stdout
    left = sorted(
        str(p.relative_to(installed.root))
        for p in installed.root.rglob("*")
        if p.is_file() or p.is_symlink()
    )
    kept = ("var/lib/bastion-audit/", "var/lib/bastion-audit-web/", "run/")
    assert [
        name for name in left if not name.startswith(kept) and not name.endswith(".log")
    ] == ["etc/bastion-audit/agent.toml.save", "etc/bastion-audit/shell.toml.save"]
    assert not (installed["UNITDIR"] / WEB_UNIT).exists()
    assert not (installed["PAMDIR"] / "audit-web").exists()
    result = make("uninstall", installed.paths, "PURGE=1")
    assert result.returncode == 0
    assert not data.exists()


def test_an_unedited_config_goes_and_the_sudo_rule_comes_only_when_asked(
    tmp_path: Path,
) -> None:
    """DESTDIR: every path under it, the files naming the paths without it."""
    real = {k: v for k, v in temp_paths(Path("/")).items()}
    before = {k: v.exists() for k, v in real.items()}
    result = make("install", {}, f"DESTDIR={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {
        k: v.exists() for k, v in real.items()
    } == before  # the machine's: untouched
    staged = {k: tmp_path / str(v).lstrip("/") for k, v in real.items()}
    assert not (staged["SUDOERSDIR"] / "zxy").exists()  # no SUDO_MODE=1
    assert not (staged["LIBEXECDIR"] / "session_tracker.sh").exists()
    assert "SUDO_MODE=1 adds the sudo mode's" in result.stdout
    unit = unit_settings(staged["UNITDIR"] / UNIT)
    assert unit["ExecStart"] == [
        "/opt/bastion-audit/bin/audit-agent run --config /etc/bastion-audit/agent.toml"
    ]
    assert os.readlink(staged["BINDIR"] / "audit-agent") == (
        "/opt/bastion-audit/bin/audit-agent"
    )
    # The venv's scripts name where it will be, and it runs from the stage too.
    script = staged["PREFIX"] / "bin" / "audit-export"
    assert script.read_text().splitlines()[0] == "#!/opt/bastion-audit/bin/python"
    version = subprocess.run(
        [str(staged["PREFIX"] / "bin/python"), str(script), "--version"],
        capture_output=True,
        text=True,
    )
    assert version.stdout.startswith("audit-export "), version.stderr
    with open(staged["SYSCONFDIR"] / "agent.toml", "rb") as f:
        assert tomllib.load(f) == {}  # the defaults, every key commented out
    result = make("uninstall", {}, f"DESTDIR={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept your edited" not in result.stdout
    left = [p for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink()]
    assert left == []
    assert staged["DATA_DIR"].is_dir()  # the data stays (PURGE=1 removes it)


def test_a_clean_venv_build_prints_no_packaging_warning(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check"]
    for args in (
        ["install", "--no-deps", "-e", str(harness.REPO)],
        ["wheel", "--no-deps", "-w", str(tmp_path / "wheel"), str(harness.REPO)],
    ):
        result = subprocess.run(
            [*pip, *args], capture_output=True, text=True, cwd=tmp_path, timeout=600
        )
        assert result.returncode == 0, result.stderr
        said = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            # This machine's pip configuration names indexes it does not have.
            if not line.startswith("WARNING: Location 'file:///opt/")
            and re.search(r"warn|deprecat|!!", line, re.IGNORECASE)
        ]
        assert said == [], args


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
        REAL["SUDOERSDIR"] / "zxy",  # only with SUDO_MODE=1: never here
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
            assert not (REAL["SUDOERSDIR"] / "zxy").exists()  # not asked for
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
