"""What an idle live session costs the agent: CPU time, not wall time.

The agent's own CPU time (all its threads, from the kernel's accounting) over
a few quiet seconds with a traced session open. A loop that re-reads an
unchanged log, or that looks at every session every round, shows up here
whatever the machine's load; speed itself belongs in bench/. And the agent's
threads go by their names, so that `top -H` shows which one it is.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]

QUIET_S = 5.0
MAX_SHARE_OF_A_CORE = 0.03  # a few percent: today's figure is far below


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def test_an_idle_live_session_costs_the_agent_almost_nothing(
    running_agent: harness.AgentProcess, user: harness.TestUser, server: harness.Sshd
) -> None:
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", "SetEnv=AUDIT_SESSION=idle")
    )
    try:
        pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"echo settled\r")
        child.expect(harness.PROMPT)
        harness.wait_for(
            lambda: (
                [
                    r["command"]
                    for r in harness.export(running_agent.data_dir, "--session", "idle")
                ]
                == ["echo settled"]
            )
        )
        time.sleep(1.0)  # what the command set off is over
        agent = psutil.Process(running_agent.process.pid)
        before, t0 = cpu_seconds(agent), time.monotonic()
        time.sleep(QUIET_S)
        used = cpu_seconds(agent) - before
        share = used / (time.monotonic() - t0)
        assert share < MAX_SHARE_OF_A_CORE, (
            f"the agent used {share:.1%} of a core with one idle session"
        )
    finally:
        child.sendeof()
        child.close()


def test_the_agents_threads_go_by_their_names(
    running_agent: harness.AgentProcess,
) -> None:
    """What costs is seen in `top -H`: the ingest, the store's writer, ..."""
    agent = psutil.Process(running_agent.process.pid)

    def names() -> set[str]:
        return {
            (task / "comm").read_text().strip()
            for task in Path(f"/proc/{agent.pid}/task").iterdir()
        }

    harness.wait_for(lambda: {"ingest", "store-writer", "discovery"} <= names())
    # The main thread keeps the program's name (ps, pgrep and psutil read it).
    assert agent.name() == "audit-agent"
    assert "audit-agent" in names()
