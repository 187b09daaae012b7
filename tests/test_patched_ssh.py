"""The patched OpenSSH client (`-Z TAG`), built from Debian's source, for real.

scripts/build-patched-ssh.sh builds it once per patch and source version; the
build is cached outside the checkout (/var/cache/bastion-audit), so a second
run, or a clean checkout on the same machine, reuses it. Then the session test
of test_end_to_end.py runs with `-Z TAG` instead of SetEnv: real sshd, the
agent as a daemon, the patched ssh in a pty.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pexpect
import psutil
import pytest

from tests import harness

BUILD_TIMEOUT_S = 900.0  # from scratch: apt, download, about 75 s of make
CACHED_RUN_DEADLINE_S = 30.0
COMMAND_DEADLINE_S = 20.0

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.timeout(BUILD_TIMEOUT_S + 300),
]

SCRIPT = harness.REPO / "scripts" / "build-patched-ssh.sh"
PATCH = harness.REPO / "patches" / "openssh-session-tag.patch"
PATCHED_SSH = Path("/usr/local/lib/bastion-audit/ssh")
BUILD_MARK = "(bastion-audit -Z)"
REFUSAL = "for -Z: 1 to 64 letters, digits, '_', '.' or '-'"


def build(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env={**os.environ, **env},
    )


def run_patched(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PATCHED_SSH), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def commands_of(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def file_identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.fixture(scope="module")
def patched_ssh() -> Path:
    result = build()
    assert result.returncode == 0, result.stderr
    assert PATCHED_SSH.is_file() and os.access(PATCHED_SSH, os.X_OK)
    return PATCHED_SSH


def test_version_marks_the_patched_build_and_system_ssh_is_untouched(
    patched_ssh: Path,
) -> None:
    result = run_patched("-V")
    assert result.returncode == 0 and result.stdout == ""
    assert re.fullmatch(
        r"OpenSSH_9\.2p1 Debian-\S+ \(bastion-audit -Z\), OpenSSL .*\n",
        result.stderr,
    ), result.stderr
    system = subprocess.run(["/usr/bin/ssh", "-V"], capture_output=True, text=True)
    assert system.stderr.startswith("OpenSSH_") and BUILD_MARK not in system.stderr
    assert shutil.which("ssh") in ("/usr/bin/ssh", "/bin/ssh")


def test_a_second_build_reuses_the_cache(patched_ssh: Path) -> None:
    before = file_identity(patched_ssh)
    started = time.monotonic()
    result = build()
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("build-patched-ssh: up to date: "), result.stderr
    assert BUILD_MARK in result.stderr
    assert elapsed < CACHED_RUN_DEADLINE_S
    assert file_identity(patched_ssh) == before


def test_a_patch_that_no_longer_applies_fails_with_one_clear_line(
    patched_ssh: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "stale.patch"
    # A context line that 9.2p1's ssh.c does not have: the hunk cannot apply.
    text = PATCH.read_text()
    assert text.count(" extern u_int muxclient_command;\n") == 1
    stale.write_text(text.replace(" extern u_int muxclient_command;\n", " int x;\n"))
    before = file_identity(patched_ssh)
    result = build(BASTION_SSH_PATCH=str(stale))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"build-patched-ssh: error: {stale} does not apply")
    assert file_identity(patched_ssh) == before
    # The failed build's directory (unpacked source, log) is ours to remove.
    named = re.search(r"\(log: (\S+)\)", errors[0])
    assert named is not None, errors[0]
    log = Path(named.group(1))
    assert log.is_file() and "FAILED" in log.read_text()
    shutil.rmtree(log.parent)


@pytest.mark.parametrize(
    "bad_tag",
    ["../../etc/x", "a;rm -rf /", "t" * 65, "", "-v", "_lead", "t\u00e9"],
    ids=["traversal", "shell", "long", "empty", "option", "underscore", "utf8"],
)
def test_an_invalid_tag_is_refused_by_ssh_itself(
    patched_ssh: Path, bad_tag: str
) -> None:
    # 127.0.0.1:9 (discard): were the tag accepted, ssh would fail differently.
    result = run_patched("-F", "/dev/null", "-p", "9", "-Z", bad_tag, "127.0.0.1")
    assert result.returncode == 255
    assert result.stdout == ""
    assert "Invalid session tag" in result.stderr and REFUSAL in result.stderr


def test_the_tag_becomes_setenv_audit_session(patched_ssh: Path) -> None:
    """ssh -G prints the final configuration: -Z is in SetEnv, first -Z wins."""

    def setenv(*argv: str) -> list[str]:
        result = run_patched("-F", "/dev/null", "-G", *argv, "h.example")
        assert result.returncode == 0, result.stderr
        return [ln for ln in result.stdout.splitlines() if ln.startswith("setenv ")]

    longest = "A" + "b" * 63
    assert setenv("-Z", longest) == [f"setenv AUDIT_SESSION={longest}"]
    assert setenv("-Zfirst", "-Z", "second") == ["setenv AUDIT_SESSION=first"]
    # SetEnv keeps only its first directive: -Z must not swallow a later one.
    assert setenv("-Z", "t1", "-o", "SetEnv=FOO=1") == [
        "setenv FOO=1",
        "setenv AUDIT_SESSION=t1",
    ]
    # An AUDIT_SESSION from SetEnv gives way to -Z, as in the agent.
    assert setenv("-o", "SetEnv FOO=1 AUDIT_SESSION=x BAR=2", "-Z", "t2") == [
        "setenv FOO=1",
        "setenv AUDIT_SESSION=t2",
        "setenv BAR=2",
    ]


def test_verbose_logs_the_tag_on_stderr_and_the_server_receives_it(
    patched_ssh: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    tag = "e2e-z-env"
    quiet = run_patched(*harness.ssh_argv(user, server, "-Z", tag), "true")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and tag not in quiet.stderr

    verbose = run_patched(*harness.ssh_argv(user, server, "-v", "-Z", tag), "true")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout == ""
    assert f"debug1: Session tag (-Z): {tag}, sent as AUDIT_SESSION" in verbose.stderr
    assert BUILD_MARK in verbose.stderr

    remote = run_patched(
        *harness.ssh_argv(user, server, "-Z", tag), 'echo "$AUDIT_SESSION"'
    )
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == f"{tag}\n"


def test_a_session_tagged_with_z_is_audited(
    patched_ssh: Path,
    running_agent: harness.AgentProcess,
    user: harness.TestUser,
    server: harness.Sshd,
) -> None:
    data_dir = running_agent.data_dir
    tag = "e2e-z-session"
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-Z", tag), program=str(patched_ssh)
    )
    ssh_pid = harness.ssh_pid_of(child)
    assert os.readlink(f"/proc/{ssh_pid}/exe") == str(patched_ssh)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)

    child.send(b"echo one\r")
    child.expect(rb"\rone\r\n")  # bash: "\r\n", bracketed paste off, "\r"
    child.expect(harness.PROMPT)
    child.send(b"echo $AUDIT_SESSION\r")
    child.expect(rb"\r" + tag.encode() + rb"\r\n")  # the server accepted it
    child.expect(harness.PROMPT)
    expected = ["echo one", "echo $AUDIT_SESSION"]
    harness.wait_for(
        lambda: commands_of(data_dir, tag) == expected, timeout=COMMAND_DEADLINE_S
    )
    records = harness.export(data_dir, "--session", tag)
    for record in records:
        assert record["tag"] == tag and record["session"] == tag
        assert record["bastion_user"] == "root"
        assert record["remote_user"] == user.name
        assert (record["host"], record["port"]) == ("127.0.0.1", server.port)
        assert record["ssh_pid"] == ssh_pid

    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    harness.wait_for(
        lambda: harness.sessions_in(data_dir)[tag].status == "closed", timeout=20
    )
    assert commands_of(data_dir, tag) == expected


def test_audit_shell_launches_the_patched_ssh_with_z(patched_ssh: Path) -> None:
    """audit-shell configured for the patched client: `-Z TAG`, and audited."""
    from tests import shell_harness
    from tests.shell_harness import MENU_FOOTER, TAG_RE

    with shell_harness.bastion() as b:
        config = b.write_config(
            "shell-patched.toml", shell=f'tag_style = "patched"\nssh = "{patched_ssh}"'
        )
        with harness.agent(
            b.workdir / "data", "--config", str(b.agent_config)
        ) as agent:
            child = shell_harness.run_as_person(b, config)
            child.expect(MENU_FOOTER)
            child.send(b"web1\r")
            child.expect(TAG_RE)
            tag = child.match.group(1).decode()
            child.expect(harness.PROMPT)
            ssh = next(
                p
                for p in psutil.process_iter(["exe", "cmdline"])
                if p.info["exe"] == str(patched_ssh)
                and tag in (p.info["cmdline"] or [])
            )
            assert ssh.info["cmdline"][ssh.info["cmdline"].index(tag) - 1] == "-Z"
            child.send(b"echo via-patched-ssh\r")
            child.expect(harness.PROMPT)
            harness.wait_for(
                lambda: commands_of(agent.data_dir, tag) == ["echo via-patched-ssh"],
                timeout=COMMAND_DEADLINE_S,
            )
            (record,) = harness.export(agent.data_dir, "--session", tag)
            assert record["bastion_user"] == b.person.name
            assert record["origin"] == "audit-shell"
            child.sendeof()
            child.expect(MENU_FOOTER)
            child.sendeof()
            child.expect(pexpect.EOF)
            child.close()
