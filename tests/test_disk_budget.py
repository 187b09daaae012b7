"""One user cannot fill the agent's disk (issue 16, disk findings).

Real users, real sessions, a real agent: a sparse file copied into the
quarantine, a traced session flooding output past its log budget, and a small
data disk (a tmpfs the test mounts) filled to the brim.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests import harness
from tests.test_spool_floods import (
    flood,
    mallory,
    spools,
    stored_of,
)
from tests.test_supervision import agent_with

__all__ = ["agent_with", "mallory", "spools"]  # fixtures, used by name

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_sparse_recording_is_quarantined_with_its_holes_and_a_bounded_prefix(
    agent_with, mallory, spools
) -> None:
    intents, recordings = spools
    agent = agent_with(intents_dir=str(intents), recordings_dir=str(recordings))
    sleeper = subprocess.Popen(["runuser", "-u", mallory.name, "--", "sleep", "300"])
    pid = 0
    try:
        pid = harness.wait_for(lambda: _child(sleeper.pid))
        flood(mallory, recordings, "recordings", 1, pid)
        harness.wait_for(lambda: stored_of(agent.data_dir, mallory) == 1)
        # 8 KiB on disk, 256 MiB long, put in place of the recording.
        fake = recordings / "fake.tmp"  # not a recording's name: not read
        script = (
            f"head -c 8192 /dev/urandom > {fake} && truncate -s 256M {fake} && "
            f"mv {fake} {recordings / 'live0.chunks'}"
        )
        done = subprocess.run(
            ["runuser", "-u", mallory.name, "--", "sh", "-c", script],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        quarantine = agent.data_dir / "quarantine"
        (copy,) = harness.wait_for(
            lambda: quarantine.is_dir() and list(quarantine.iterdir()), timeout=20
        )
        st = copy.stat()
        assert st.st_blocks * 512 < 1 << 20, "the holes were written out"
        assert st.st_size == 64 << 20  # the first 64 MiB, no more
        with open(copy, "rb") as f:
            assert f.read(8192) == (recordings / "live0.chunks").read_bytes()[:8192]
        assert "first 64 MiB" in agent.log_text()
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
        sleeper.kill()
        sleeper.wait()


def _child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None
