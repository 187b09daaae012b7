"""One user cannot fill the agent's disk (issue 16, disk findings).

Real users, real sessions, a real agent: a sparse file copied into the
quarantine, a traced session flooding output past its log budget, and a small
data disk (a tmpfs the test mounts) filled to the brim.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.test_restart import start_agent, stop_agent
from tests.test_spool_floods import (
    mallory,
    reaches_the_store,
    recorders,
    spools,
    stored_of,
    victim,
)
from tests.test_supervision import NOTICE, agent_with, session, tagged, wait_ended

__all__ = ["agent_with", "mallory", "spools"]  # fixtures, used by name

FLOOD = b"cat /dev/urandom | base64\r"


@contextlib.contextmanager
def drained(child: harness.pexpect.spawn) -> Iterator[None]:
    """Read and drop a child's output meanwhile, as a terminal would show it.

    Unread, the pty fills and ssh, and the flood with it, stops writing.
    """
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                child.read_nonblocking(1 << 20, timeout=0.1)
            except harness.pexpect.TIMEOUT:
                continue
            except harness.pexpect.EOF:
                return

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_sparse_recording_is_quarantined_with_its_holes_and_a_bounded_prefix(
    agent_with, mallory, spools
) -> None:
    intents, recordings = spools
    agent = agent_with(intents_dir=str(intents), recordings_dir=str(recordings))
    with recorders(mallory, recordings, 1):
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
        # Named in the log once the copy is whole.
        harness.wait_for(lambda: "/quarantine/live0.chunks." in agent.log_text(), 20)
        (copy,) = (agent.data_dir / "quarantine").iterdir()
        # A session log's copy: its lines, what was typed redacted, read from
        # at most its first 64 MiB; the 256 MiB of zeros are one line, left out.
        st = copy.stat()
        assert st.st_blocks * 512 < 1 << 20, "the holes were written out"
        assert st.st_size < 1 << 20
        assert b"#bastion-audit-quarantine: " in copy.read_bytes()


def _child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


# -- a session flooding its log past its budget ---------------------------------


def test_strict_ends_a_session_whose_log_passes_its_budget(
    agent_with, user, server, mallory
) -> None:
    agent = agent_with(log_max_bytes=4 << 20)
    with victim(user, server, "bystander") as other:
        flooder = harness.spawn_ssh(tagged(mallory, server, "flood-out"))
        try:
            flooder.expect(harness.PROMPT)
            flooder.send(FLOOD)
            with drained(flooder):
                reaches_the_store(other, agent.data_dir, "bystander", "echo PING")
                # Ended (the notice may drown in the flood: the tty's buffer is
                # full, and the notice is never written blocking).
                harness.wait_for(lambda: not flooder.isalive(), timeout=30)
        finally:
            flooder.close(force=True)
        ended = wait_ended(agent.data_dir, "flood-out", "terminated")
        assert "its log passed 4.0 MiB (log_max_bytes)" in ended.end_reason
        assert (
            harness.export(agent.data_dir, "--session", "flood-out")[0]["command"]
            == "cat /dev/urandom | base64"
        )
        reaches_the_store(other, agent.data_dir, "bystander", "echo after")


def test_permissive_stops_tracing_a_session_past_its_budget_with_the_gap(
    agent_with, user, server
) -> None:
    agent = agent_with(mode="permissive", log_max_bytes=4 << 20)
    child = harness.spawn_ssh(tagged(user, server, "flood-gap"))
    try:
        pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(FLOOD)
        with drained(child):
            live = harness.wait_for(
                lambda: (s := session(agent.data_dir, "flood-gap")) and s.gaps and s,
                timeout=30,
            )
            assert live.status == "live" and live.gaps[0][1] is None
            harness.wait_for(lambda: not harness.is_traced(pid), timeout=10)
        child.sendintr()  # the flood ends; the session goes on, untraced
        child.expect(harness.PROMPT)
        child.send(b"echo unseen\r")
        child.expect(b"unseen")  # its echo
        # The next prompt, before the Ctrl-D: one sent while the command still
        # ran was never acted on in a clean-clone run (20 s, the prompt shown).
        child.expect(harness.PROMPT)
        child.sendeof()
        child.expect(harness.pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)
    ended = wait_ended(agent.data_dir, "flood-gap", "closed")
    (gap,) = ended.gaps
    assert gap[0] < gap[1]
    commands = [r["command"] for r in harness.export(agent.data_dir)]
    assert "cat /dev/urandom | base64" in commands and "echo unseen" not in commands
    assert "its log passed 4.0 MiB" in agent.log_text()


# -- a small data disk, filled ---------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs of the test's own, as the data disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> None:
    """Write a file of zeros (real pages) until `leave` bytes are free, or none."""
    with open(path, "ab", buffering=0) as f:
        block = b"\0" * (1 << 16)
        try:
            while free_bytes(path.parent) > leave + len(block):
                f.write(block)
            if leave == 0:
                while True:
                    f.write(b"\0" * 4096)
        except OSError:
            pass  # the disk is full


def status(data_dir: Path) -> tuple[int, str]:
    done = harness.run_cli("audit-agent", "status", "--data-dir", str(data_dir))
    return done.returncode, done.stdout


def test_a_full_data_disk_refuses_new_sessions_damages_nothing_and_passes(
    tmp_path: Path, small_disk: Path, user, server
) -> None:
    data_dir = small_disk / "data"
    config = tmp_path / "agent.toml"
    config.write_text(f"disk_reserve_bytes = {16 << 20}\n")
    with harness.agent(data_dir, "--config", str(config)):
        with victim(user, server, "before") as first:
            reaches_the_store(first, data_dir, "before", "echo one")
            # Below the reserve: a new session is refused, the live one goes on.
            fill(small_disk / "filler", leave=11 << 20)
            harness.wait_for(lambda: "nearly full" in status(data_dir)[1])
            refused = harness.spawn_ssh(tagged(user, server, "refused"))
            refused.expect(NOTICE, timeout=30)
            refused.expect(harness.pexpect.EOF, timeout=30)
            refused.close()
            ended = wait_ended(data_dir, "refused", "terminated")
            assert "the data disk is nearly full" in ended.end_reason
            reaches_the_store(first, data_dir, "before", "echo two")
            stored = harness.export(data_dir)
            # No space at all: the live session is ended too, and writes fail.
            fill(small_disk / "filler2", leave=0)
            first.expect(harness.pexpect.EOF, timeout=30)
            code, out = status(data_dir)
            assert code == 4 and ("no space left" in out or " full" in out), out
            # Nothing stored is damaged.
            assert harness.export(data_dir) == stored
            # Space again: what waited is written, new sessions are traced.
            (small_disk / "filler").unlink()
            (small_disk / "filler2").unlink()
            ended = wait_ended(data_dir, "before", "terminated")
            assert "the data disk is full" in ended.end_reason
        harness.wait_for(lambda: status(data_dir)[0] == 0, timeout=30)
        with victim(user, server, "after") as again:
            reaches_the_store(again, data_dir, "after", "echo three")
        assert [r["command"] for r in harness.export(data_dir)] == [
            "echo one",
            "echo two",
            "echo three",
        ]


# -- a live session's log gives back what is ingested ------------------------------


def test_a_live_logs_ingested_part_is_given_back_and_restarts_lose_nothing(
    tmp_path: Path, user, server
) -> None:
    readable = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="big."))  # by the user
    readable.chmod(0o755)
    big = readable / "big.txt"
    big.write_text(("y" * 79 + "\n") * 100_000)  # 8 MB of output
    big.chmod(0o644)
    data_dir = tmp_path / "data"
    agent = start_agent(data_dir)
    try:
        with victim(user, server, "reclaim") as child:
            child.timeout, child.maxread = 120, 1 << 20
            child.send(f"cat {big}\r".encode())
            child.expect(harness.PROMPT)
            # The next command's checkpoint lies past the output: durable, the
            # output before it is never read again.
            reaches_the_store(child, data_dir, "reclaim", "echo next")
            log = data_dir / "logs" / "reclaim.strace"

            def given_back() -> bool:
                st = log.stat()
                return st.st_size > 7 << 20 and st.st_blocks * 512 < 1 << 20

            harness.wait_for(given_back, timeout=30)
            # A restart after kill -9 resumes from the stored checkpoint, past
            # the holes: nothing read twice, nothing lost.
            agent.kill()
            agent.wait()
            agent = start_agent(data_dir)
            reaches_the_store(child, data_dir, "reclaim", "echo after")
        assert [r["command"] for r in harness.export(data_dir)] == [
            f"cat {big}",
            "echo next",
            "echo after",
        ]
    finally:
        stop_agent(agent)
        shutil.rmtree(readable)
