"""scripts/session_tracker.sh and sudoers.d/zxy, run for real."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from parsers.strace_lines import decode_log
from parsers.terminal import CommandBuilder
from tests import harness

SCRIPT = harness.REPO / "scripts" / "session_tracker.sh"
DEFAULT_LOGS = Path("/var/lib/bastion-audit/logs")


def tracker(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=30,
    )


def test_sudoers_file_is_valid() -> None:
    if shutil.which("visudo") is None:
        pytest.skip("visudo is not installed (package sudo)")
    result = subprocess.run(
        ["visudo", "-cf", str(harness.REPO / "sudoers.d" / "zxy")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["../x"], {}, 2, "invalid tag"),
        (["a;b"], {}, 2, "invalid tag"),
        (["--pid", "1x", "t"], {}, 2, "invalid pid"),
        (["--bogus", "t"], {}, 2, "unknown option --bogus"),
        (["t"], {}, 2, "--pid is required outside sudo"),
        (
            ["--data-dir", "/tmp/x", "t"],
            {"SUDO_UID": "1000"},
            2,
            "--data-dir is not allowed under sudo",
        ),
    ],
)
def test_refusals(
    args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = tracker(*args, env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and result.stderr.startswith(
        "session_tracker.sh: error:"
    )


@pytest.mark.root
def test_refuses_a_process_that_is_not_ssh(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = tracker("--data-dir", str(tmp_path), "--pid", str(sleeper.pid), "t1")
        assert result.returncode == 3 and "is not an ssh client" in result.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (tmp_path / "logs").exists()


@pytest.mark.root
@pytest.mark.slow
def test_sudo_mode_traces_only_the_callers_own_ssh(
    user: harness.TestUser, server: harness.Sshd, module_dir: Path
) -> None:
    """The original design's flow: the bastion user runs `sudo session_tracker.sh TAG`."""
    if shutil.which("sudo") is None:
        pytest.skip("sudo is not installed")
    tag = f"sudo-{secrets.token_hex(3)}"
    rule = Path(f"/etc/sudoers.d/bastion-audit-test-{secrets.token_hex(3)}")
    rule.write_text(
        f"{user.name} ALL=(root) NOPASSWD: {SCRIPT} ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$\n"
    )
    rule.chmod(0o440)
    # The user's own copy of the key, so that their ssh can read it.
    key = user.home / ".ssh" / "id_test"
    shutil.copy(user.key, key)
    os.chown(key, user.uid, user.uid)
    log = DEFAULT_LOGS / f"{tag}.strace"
    other_log = DEFAULT_LOGS / f"{tag}x.strace"
    try:
        assert (
            subprocess.run(["visudo", "-cf", str(rule)], capture_output=True).returncode
            == 0
        )

        def as_user(*argv: str) -> list[str]:
            return ["runuser", "-u", user.name, "--", *argv]

        # sudo admits exactly one tag-shaped argument: no --data-dir, no --pid.
        denied = subprocess.run(
            as_user("sudo", "-n", str(SCRIPT), "--data-dir", "/tmp", tag),
            capture_output=True,
            text=True,
        )
        assert denied.returncode != 0 and not Path("/tmp/logs").exists()

        argv = harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
        argv[argv.index(str(user.key))] = str(key)
        argv[argv.index(f"UserKnownHostsFile={server.known_hosts}")] = (
            "UserKnownHostsFile=/dev/null"
        )
        tracked = subprocess.Popen(
            as_user("sudo", "-n", str(SCRIPT), tag), stderr=subprocess.PIPE, text=True
        )
        child = harness.spawn_ssh(as_user("ssh", *argv)[1:], program="runuser")
        ssh_pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=15)
        child.send(b"echo traced-by-sudo\r")
        child.expect(harness.PROMPT)
        child.sendeof()
        child.expect(harness.pexpect.EOF)
        child.close()
        assert tracked.wait(15) == 0, tracked.stderr.read() if tracked.stderr else ""
        assert oct(log.stat().st_mode & 0o777) == "0o600"
        events = decode_log(log.read_bytes())
        builder = CommandBuilder()
        lines = [line.text for event in events for line in builder.feed(event)]
        assert lines == ["echo traced-by-sudo"]
        assert b'"tracer":"sudo"' in log.read_bytes()

        # Root's ssh with the user's tag is not the user's: nothing is attached.
        root_child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}x")
        )
        root_pid = harness.ssh_pid_of(root_child)
        root_child.expect(harness.PROMPT)
        start = time.monotonic()
        refused = subprocess.run(
            as_user("sudo", "-n", str(SCRIPT), f"{tag}x"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 3 and "no ssh tagged" in refused.stderr
        assert 9 < time.monotonic() - start < 25  # waited, bounded
        assert not harness.is_traced(root_pid) and not other_log.exists()
        root_child.sendeof()
        root_child.close()
    finally:
        rule.unlink()
        for path in (log, other_log):
            path.unlink(missing_ok=True)


@pytest.mark.root
@pytest.mark.slow
def test_make_demo_shows_the_commands_it_typed() -> None:
    result = subprocess.run(
        ["make", "-s", "demo"],
        cwd=harness.REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit-tail printed:" in result.stdout
    printed = result.stdout.split("audit-tail printed:")[1]
    for command in (
        "echo hello from the demo",
        "cat /etc/debian_version",
        "echo no typo",
    ):
        assert command in printed


def test_make_demo_installs_only_what_the_demo_needs() -> None:
    """Nothing of the test stack: no shellinabox, no browser, no Django."""
    plan = subprocess.run(
        ["make", "-n", "-B", "-s", "demo"],
        cwd=harness.REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages = {
        word
        for found in re.findall(r"scripts/ensure-packages\.sh([^;|&\n]*)", plan)
        for word in found.split()
    }
    assert packages == {"strace", "openssh-client", "openssh-server", "python3-venv"}
    extras = {line.split("'")[1] for line in plan.splitlines() if "-e '.[" in line}
    assert extras == {".[demo]"}
