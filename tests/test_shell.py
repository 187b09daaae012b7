"""audit-shell's pieces: the ssh command line, its timers, its refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agent.inventory import Account, Host, ShellSettings, Target
from agent.shell.connect import new_tag, ssh_command
from agent.shell.relay import Outcome, Timers
from tests.harness import BIN
from tracer.tags import parse_ssh_argv, valid_tag

HOST = Host("web1", "10.0.0.7", 2222, "web")
ENV = {"HOME": "/home/zxy", "USER": "zxy", "TERM": "xterm-256color", "X": "leak"}


def test_key_login_carries_the_tag_the_agent_reads() -> None:
    target = Target(HOST, Account("deploy", key_file=Path("/etc/keys/web1")))
    argv, env = ssh_command(ShellSettings(), target, "as-1", Path("/kh"), ENV)
    seen = parse_ssh_argv(argv)
    assert (seen.tag, seen.tag_source) == ("as-1", "SetEnv")
    assert (seen.remote_user, seen.host, seen.port, seen.command) == (
        "deploy",
        "10.0.0.7",
        2222,
        (),
    )
    assert "StrictHostKeyChecking=accept-new" in argv
    assert "UserKnownHostsFile=/kh" in argv
    assert "EscapeChar=none" in argv and "ClearAllForwardings=yes" in argv
    assert argv[-2:] == ["--", "10.0.0.7"]
    assert "X" not in env and env["TERM"] == "xterm-256color"


def test_password_goes_to_sshpass_through_the_environment_only() -> None:
    target = Target(HOST, Account("deploy", password="pa ss"))
    settings = ShellSettings(tag_style="patched", ssh=Path("/opt/ssh"))
    argv, env = ssh_command(settings, target, "as-2", Path("/kh"), ENV)
    assert argv[:3] == ["/usr/bin/sshpass", "-e", "/opt/ssh"]
    assert not any("pa ss" in a for a in argv)
    assert env["SSHPASS"] == "pa ss"
    assert parse_ssh_argv(argv[2:]).tag_source == "-Z"
    bad_term = ssh_command(settings, target, "t", Path("/kh"), {"TERM": "x;rm"})[1]
    assert bad_term["TERM"] == "xterm"


def test_tags_are_fresh_and_valid() -> None:
    tags = {new_tag() for _ in range(100)}
    assert len(tags) == 100 and all(valid_tag(t) for t in tags)


def test_idle_and_time_limit_warn_once_then_cut() -> None:
    timers = Timers(idle_timeout_s=10, warn_before_s=3, deadline=100, last_input=0)
    assert timers.check(5) == (None, None)
    assert timers.next_check_s(5) == 2  # the idle warning at 7
    warning, cut = timers.check(7.5)
    assert "idle" in warning and cut is None
    assert timers.check(8) == (None, None)  # once
    assert timers.check(10) == (None, Outcome.IDLE)
    timers.input(10)
    assert timers.check(16) == (None, None)
    assert "time limit" in timers.check(97.5)[0]
    assert timers.check(100) == (None, Outcome.TIME_LIMIT)
    none = Timers(idle_timeout_s=0, warn_before_s=3, deadline=None, last_input=0)
    assert none.check(1e9) == (None, None) and none.next_check_s(0) == 3600


def run_shell(*args: str, env: dict[str, str] | None = None, tty: bool = False):
    return subprocess.run(
        [str(BIN / "audit-shell"), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=30,
    )


def test_commands_and_missing_terminal_are_refused(tmp_path: Path) -> None:
    for command in ("bash", "/usr/lib/openssh/sftp-server", "scp -t /tmp", ""):
        result = run_shell(env={"SSH_ORIGINAL_COMMAND": command})
        assert result.returncode == 3
        assert result.stdout == ""
        assert result.stderr == (
            "audit-shell: error: this account only offers the host menu; "
            "commands, scp, sftp and rsync are refused\n"
        )
    result = run_shell("--config", str(tmp_path / "none.toml"))
    assert result.returncode == 3
    assert (
        result.stderr == "audit-shell: error: this account needs a terminal (ssh -t)\n"
    )


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    import pexpect

    config = tmp_path / "shell.toml"
    config.write_text("[shell]\nidle_timeout_s = 'x'\n")
    child = pexpect.spawn(
        str(BIN / "audit-shell"), ["--config", str(config)], env=dict(os.environ)
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert child.before.decode().strip() == (
        f"audit-shell: error: {config}: shell.idle_timeout_s must be a number of "
        "seconds"
    )
