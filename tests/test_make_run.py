"""make run, the README's first command, on a machine that already audits.

An unscoped agent beside another one races it for every tagged ssh, and in
strict mode ends the sessions it loses. make run looks first (scripts/run.py)
and refuses, naming what it found and how to scope. Every run here is a dry
run (DRY_RUN=1): it checks and prints the agent's command line, and never
starts an agent that would reach the sessions of other suites on this machine.
The agent itself says first where it writes, its mode and its scope.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]


def make_run(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(harness.REPO), "run", f"DATA_DIR={data_dir}"]
        + ["DRY_RUN=1", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def scope() -> Iterator[subprocess.Popen[bytes]]:
    """A process tree of our own (a sleeping shell) to scope make run to."""
    shell = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield shell
    finally:
        shell.kill()
        shell.wait()


def test_make_run_refuses_beside_a_running_agent(
    tmp_path: Path, running_agent: harness.AgentProcess
) -> None:
    result = make_run(tmp_path / "mine")
    assert result.returncode != 0 and result.stdout == ""
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("make run:")]
    assert line.startswith("make run: error: already audited here: pid ")
    assert "audit-agent run (" in line
    assert line.endswith("make run SCOPE_PID=<pid of a shell>")
    assert not (tmp_path / "mine").exists()
    # The agent that runs said first where it writes, its mode and its scope.
    log = running_agent.log_text().splitlines()
    assert log[:3] == [
        f"audit-agent: INFO: data dir {running_agent.data_dir}",
        "audit-agent: INFO: mode strict: a tagged ssh that cannot be traced is ended",
        f"audit-agent: INFO: scope: only the ssh clients under pid {os.getpid()}",
    ]


def test_make_run_scoped_to_a_tree_of_its_own_runs(
    tmp_path: Path, scope: subprocess.Popen[bytes]
) -> None:
    result = make_run(tmp_path / "mine", f"SCOPE_PID={scope.pid}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(harness.BIN / "audit-agent"),
        "run",
        "--data-dir",
        str(tmp_path / "mine"),
        "--scope-pid",
        str(scope.pid),
    ]


def test_a_session_another_tracer_holds_is_in_the_way(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    """A tagged ssh under our scope, traced by a strace that writes elsewhere."""
    tag = f"held-{secrets.token_hex(3)}"
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    )
    pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    logs = tmp_path / "data" / "logs"
    logs.mkdir(parents=True)
    elsewhere = tmp_path / "other.strace"
    tracer = subprocess.Popen(
        ["strace", "-q", "-o", str(elsewhere), "-p", str(pid)],
        start_new_session=True,
    )
    try:
        harness.wait_for(lambda: harness.is_traced(pid), timeout=10)
        held = make_run(tmp_path / "data", f"SCOPE_PID={os.getpid()}")
        assert held.returncode != 0
        assert f"pid {tracer.pid}, strace tracing session '{tag}' (ssh {pid})" in (
            held.stderr
        )
        # The same strace writing into this data dir's logs: left by a killed
        # agent, adopted by the next one, not in the way.
        tracer.send_signal(signal.SIGTERM)
        tracer.wait(10)
        harness.wait_for(lambda: not harness.is_traced(pid), timeout=10)
        tracer = subprocess.Popen(
            ["strace", "-q", "-o", str(logs / f"{tag}.strace"), "-p", str(pid)],
            start_new_session=True,
        )
        harness.wait_for(lambda: harness.is_traced(pid), timeout=10)
        ours = make_run(tmp_path / "data", f"SCOPE_PID={os.getpid()}")
        assert ours.returncode == 0, ours.stderr
    finally:
        tracer.send_signal(signal.SIGTERM)
        tracer.wait(10)
        child.sendeof()
        child.close()
