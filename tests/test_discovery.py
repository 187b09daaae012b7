"""Discovery on real processes: an ssh whose argv cannot be read yet."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import harness
from tracer.discovery import Discovery

# Blanks its own argv (what /proc/PID/cmdline shows during execve, before the
# kernel lays out the new argv), then restores it on request.
BLANK_ARGV = """
import sys
stat = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
start, end = int(stat[45]), int(stat[46])  # fields 48 and 49: arg_start, arg_end
with open("/proc/self/mem", "r+b", buffering=0) as mem:
    mem.seek(start)
    saved = mem.read(end - start)
    mem.seek(start)
    mem.write(bytes(len(saved)))
    print("blank", flush=True)
    sys.stdin.readline()
    mem.seek(start)
    mem.write(saved)
    print("restored", flush=True)
    sys.stdin.readline()
"""


def python_named_ssh(tmp_path: Path, script: str, tag: str) -> subprocess.Popen[str]:
    """A real process whose executable is named ssh (a copy of this Python),
    running `script` with a session tag in its argv; pipes to talk to it."""
    fake_ssh = tmp_path / "ssh"
    shutil.copy(os.path.realpath(sys.executable), fake_ssh)
    path = tmp_path / "script.py"
    path.write_text(script)
    return subprocess.Popen(
        [fake_ssh, path, "-o", f"SetEnv=AUDIT_SESSION={tag}", "db1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_an_ssh_seen_before_its_argv_is_looked_at_again(tmp_path: Path) -> None:
    process = python_named_ssh(tmp_path, BLANK_ARGV, "midexec")
    assert process.stdin and process.stdout
    try:
        assert process.stdout.readline() == "blank\n"
        discovery = Discovery(scope_pid=os.getpid())
        assert discovery.poll() == []
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline() == "restored\n"
        found = [s for s in discovery.poll() if s.traced]
        assert [(s.pid, s.tag) for s in found] == [(process.pid, "midexec")]
        assert discovery.stats.mid_exec == 1
    finally:
        process.kill()
        process.wait()


@pytest.mark.root
def test_an_agent_stops_when_its_scope_process_ends(tmp_path: Path) -> None:
    # Left running, it would audit whatever process reuses the pid next.
    scope = subprocess.Popen(["sleep", "1"])
    with harness.agent(tmp_path / "data", "--scope-pid", str(scope.pid)) as agent:
        scope.wait()
        status = agent.process.wait(timeout=30)
        assert status == 0
        assert f"scope pid {scope.pid} has ended: stopping" in agent.log_text()


@pytest.mark.root
def test_an_agent_refuses_a_scope_pid_that_does_not_exist(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with (
        pytest.raises(RuntimeError, match=f"scope pid {gone.pid}: no such process"),
        harness.agent(tmp_path / "data", "--scope-pid", str(gone.pid)),
    ):
        pass


def test_argv_is_read_only_so_far(tmp_path: Path) -> None:
    """At most ARGV_MAX_BYTES of argv: a tag in it counts, one past it does not
    (ssh reads its options first, so only a user's own choice puts it there)."""
    from tracer.procfs import ARGV_MAX_BYTES

    fake_ssh = tmp_path / "ssh"
    shutil.copy("/bin/dash", fake_ssh)
    junk = ["-o", "SendEnv=" + "x" * 8000] * 6  # 48 KB, past the bound
    # dash's builtin `read` waits on stdin without a child process.
    early = subprocess.Popen(
        [fake_ssh, "-c", "read x", "h", "-o", "SetEnv=AUDIT_SESSION=early", *junk],
        stdin=subprocess.PIPE,
    )
    late = subprocess.Popen(
        [fake_ssh, "-c", "read x", "h", *junk, "-o", "SetEnv=AUDIT_SESSION=late"],
        stdin=subprocess.PIPE,
    )
    try:
        harness.wait_for(
            lambda: all(
                Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(bytes(fake_ssh))
                for p in (early, late)
            )
        )
        seen = Discovery(scope_pid=os.getpid()).poll()
        found = [s for s in seen if s.traced]
        assert [s.tag for s in found] == ["early"]
        # A tag past what is read is no tag: the ssh is on record untagged.
        assert [(s.pid, s.seen) for s in seen if not s.traced] == [
            (late.pid, "untagged")
        ]
        assert len(found[0].argv) <= ARGV_MAX_BYTES
        assert found[0].argv.endswith(b"\0")  # whole arguments only
        assert b"SendEnv" in found[0].argv
    finally:
        for p in (early, late):
            p.kill()
            p.wait()


@pytest.mark.root
@pytest.mark.slow
def test_without_process_events_the_agent_polls(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    """In a network namespace of its own (as in many containers) the kernel's
    process events are not there: the agent walks /proc instead."""
    data_dir = tmp_path / "data"
    log_path = tmp_path / "agent.log"
    config = tmp_path / "agent.toml"
    config.write_text("")
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--",
                str(harness.BIN / "audit-agent"),
                "run",
                "--data-dir",
                str(data_dir),
                "--config",
                str(config),
                "--poll-interval",
                "0.05",
                "--scope-pid",
                str(os.getpid()),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        harness.wait_for(lambda: "auditing (" in log_path.read_text())
        assert "process table polled every 0.05s" in log_path.read_text()
        child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", "SetEnv=AUDIT_SESSION=polled")
        )
        pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"echo polled\r")
        child.expect(harness.PROMPT)
        harness.wait_for(
            lambda: (
                [r["command"] for r in harness.export(data_dir, "--session", "polled")]
                == ["echo polled"]
            )
        )
        child.sendeof()
        child.close()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)


def test_an_ssh_forked_but_not_exec_d_is_no_second_session(tmp_path: Path) -> None:
    """ssh forks before it runs a ProxyCommand; a subshell of dash stands in."""
    fake_ssh = tmp_path / "ssh"
    shutil.copy("/bin/dash", fake_ssh)
    parent = subprocess.Popen(
        [fake_ssh, "-c", "(read x); :", "h", "-o", "SetEnv=AUDIT_SESSION=forked"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        harness.wait_for(
            lambda: (
                Path(f"/proc/{parent.pid}/task").is_dir()
                and any(
                    Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
                    .read_text()
                    .split()
                )
            )
        )
        discovery = Discovery(scope_pid=os.getpid())
        found = [s for s in discovery.poll() if s.traced]
        assert [(s.pid, s.tag) for s in found] == [(parent.pid, "forked")]
        assert discovery.stats.forked == 1
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the subshell too
        parent.wait()


# Execs itself once, with the same argv, when a line comes on stdin.
REEXEC = """
import os, sys
print("ready", flush=True)
sys.stdin.readline()
os.execv(sys.executable, [sys.executable, *sys.argv])
"""


def test_an_exec_event_after_the_poll_saw_that_exec_looks_once(tmp_path: Path) -> None:
    """The kernel's exec event can come after the poll has looked at the new
    image: the same exec is not looked at twice (an invalid tag was logged
    twice), while a new exec of the same argv is."""
    process = python_named_ssh(tmp_path, REEXEC, "../../etc/x")
    assert process.stdin and process.stdout
    try:
        assert process.stdout.readline() == "ready\n"
        discovery = Discovery(scope_pid=os.getpid())
        (refused,) = [s for s in discovery.poll() if s.pid == process.pid]
        assert refused.reason.startswith("invalid session tag")
        assert discovery.exec_seen(process.pid) is None  # the late event
        assert discovery.stats.bad_tags == 1
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline() == "ready\n"  # exec'd again
        again = discovery.exec_seen(process.pid)
        assert again is not None and again.pid == process.pid
        assert discovery.stats.bad_tags == 2
    finally:
        process.kill()
        process.wait()
