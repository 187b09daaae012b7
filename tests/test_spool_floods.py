"""One user cannot stall the agent through the spools (issue 16, spool floods).

Any bastion user may write the two spools (root's, mode 1733): connection
records and paramiko recordings. A real unprivileged account floods them
while another user types in a real traced session; that user's command must
still reach the store within the Enter-to-feed bound, and what the flooder
made the agent keep is bounded per uid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests import harness
from tests.test_supervision import agent_with, tagged

__all__ = ["agent_with"]  # a fixture, used by name

pytestmark = [pytest.mark.root, pytest.mark.slow]

# The Enter-to-feed goal is 100 ms; this is a generous timeout, not a timing
# assertion (before the fix: 26.5 s for the intents flood).
FEED_TIMEOUT_S = 10.0
FLOODER = textwrap.dedent(
    """
    import json, os, sys
    spool, kind, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(first, first + count):
        if kind == "intents":
            tag = f"flood{i}"
            fd = os.open(f"{spool}/{tag}.json", flags, 0o600)
            os.write(fd, json.dumps({"v": 1, "tag": tag, "inventory_host": "web1",
                "address": "10.0.0.7", "port": 22, "remote_account": "deploy",
                "client_addr": None}).encode())
        else:
            fd = os.open(f"{spool}/empty{i}.chunks", flags, 0o600)
        os.close(fd)
    """
)


# A recorder of the user's own: it writes a whole recording's start line,
# naming itself, and holds the file open as audit-shell's recorder does (the
# agent binds a recording only to a live writer that holds it).
RECORDER = textwrap.dedent(
    """
    import base64, json, os, sys, time
    spool, i = sys.argv[1], int(sys.argv[2])
    pid = os.getpid()
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    ticks = int(stat[stat.rfind(b")") + 2:].split()[19])
    argv = base64.b64encode(b"ssh\\0-p\\0002200\\0-l\\0bob\\0--\\0db1")
    start = {"event": "start", "time": 1.0, "tag": f"live{i}", "ssh_pid": pid,
        "start_ticks": ticks, "started_at": 1_700_000_000.0 + i,
        "uid": os.getuid(), "user": "x", "tty": "/dev/pts/0",
        "argv_b64": argv.decode(), "rows": 24, "cols": 80, "recorder": "paramiko"}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(f"{spool}/live{i}.chunks", flags, 0o600)
    os.write(fd, b"#bastion-audit " + json.dumps(start).encode() + b"\\n")
    print(pid, flush=True)
    time.sleep(300)
    """
)


@contextlib.contextmanager
def recorders(user: harness.TestUser, spool: Path, count: int) -> Iterator[list[int]]:
    """`count` live recorders of `user`, each holding its recording; their pids."""
    processes = []
    try:
        for i in range(count):
            processes.append(
                subprocess.Popen(
                    ["runuser", "-u", user.name, "--", "/usr/bin/python3", "-c"]
                    + [RECORDER, str(spool), str(i)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        yield [int(p.stdout.readline()) for p in processes if p.stdout]
    finally:
        for process in processes:
            process.kill()  # runuser: its python is killed below, by owner
            process.wait()
        subprocess.run(["pkill", "-KILL", "-u", user.name], check=False)


@pytest.fixture(scope="module")
def mallory(module_dir: Path) -> Iterator[harness.TestUser]:
    with harness.test_user(module_dir, prefix="flood") as u:
        yield u


@pytest.fixture
def spools() -> Iterator[tuple[Path, Path]]:
    """The two spools as install-shell makes them, where any user reaches them."""
    top = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="spools."))
    top.chmod(0o755)
    intents, recordings = top / "intents", top / "recordings"
    for spool in (intents, recordings):
        spool.mkdir()
        spool.chmod(0o1733)
    yield intents, recordings
    shutil.rmtree(top, ignore_errors=True)


def flood(
    user: harness.TestUser, spool: Path, kind: str, count: int, *pids: int
) -> None:
    """`count` files written into `spool` by `user` itself, as fast as it can."""
    subprocess.run(
        ["runuser", "-u", user.name, "--", "/usr/bin/python3", "-c", FLOODER]
        + [str(spool), kind, "0", str(count), *map(str, pids)],
        check=True,
        timeout=120,
    )


def commands_of(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def reaches_the_store(child, data_dir: Path, tag: str, text: str) -> float:
    """Type `text`; seconds until it is stored (TimeoutError past the bound)."""
    typed = time.monotonic()
    child.send(text.encode() + b"\r")
    harness.wait_for(lambda: text in commands_of(data_dir, tag), FEED_TIMEOUT_S)
    return time.monotonic() - typed


@contextlib.contextmanager
def victim(user, server, tag: str) -> Iterator[harness.pexpect.spawn]:
    """Another user's traced session, at its prompt."""
    child = harness.spawn_ssh(tagged(user, server, tag))
    try:
        pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        yield child
    finally:
        child.close(force=True)


def settles(pid: int, window_s: float = 2.0, timeout: float = 90.0) -> None:
    """Wait until the process uses under a tenth of a core over a window."""
    proc = psutil.Process(pid)

    def cpu() -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    deadline = time.monotonic() + timeout
    while True:
        before = cpu()
        time.sleep(window_s)
        used = cpu() - before
        if used < window_s / 10:
            return
        assert time.monotonic() < deadline, f"still busy: {used:.2f} s in {window_s} s"


def stored_of(data_dir: Path, user: harness.TestUser) -> int:
    return sum(
        1 for s in harness.sessions_in(data_dir).values() if s.bastion_user == user.name
    )


def test_a_flood_of_connection_records_is_capped_per_user(
    agent_with, user, server, mallory, spools
) -> None:
    intents, recordings = spools
    agent = agent_with(intents_dir=str(intents), recordings_dir=str(recordings))
    with victim(user, server, "victim-intents") as child:
        reaches_the_store(child, agent.data_dir, "victim-intents", "echo before")
        flood(mallory, intents, "intents", 8000)
        reaches_the_store(child, agent.data_dir, "victim-intents", "echo PING")
        time.sleep(3)  # the agent takes what the limits let it, meanwhile
        reaches_the_store(child, agent.data_dir, "victim-intents", "echo after")
    # 8,000 pending sessions before; now the uid's share, and no more.
    assert stored_of(agent.data_dir, mallory) <= 300
    assert f"uid {mallory.uid}" in agent.log_text()


def test_empty_recordings_are_never_read_again_and_removed_once_stale(
    agent_with, user, server, mallory, spools
) -> None:
    intents, recordings = spools
    agent = agent_with(intents_dir=str(intents), recordings_dir=str(recordings))
    with victim(user, server, "victim-chunks") as child:
        flood(mallory, recordings, "chunks", 20_000)
        reaches_the_store(child, agent.data_dir, "victim-chunks", "echo PING")
        # Files looked at once cost nothing more: the agent settles (its own
        # CPU time over a window, not the test's clock). Before: it read them
        # all again every second, 0.9 s of each 1 s round, for ever.
        settles(agent.process.pid)
        harness.wait_for(lambda: not os.listdir(recordings), timeout=60)
        reaches_the_store(child, agent.data_dir, "victim-chunks", "echo after")
    assert stored_of(agent.data_dir, mallory) == 0


def test_one_users_live_recordings_beyond_its_share_wait_their_turn(
    agent_with, user, server, mallory, spools
) -> None:
    intents, recordings = spools
    agent = agent_with(
        intents_dir=str(intents),
        recordings_dir=str(recordings),
        spool_max_per_uid=3,
        spool_rate_per_uid_s=100.0,
    )
    # Ten recorders of the user's own, alive, each with a whole recording.
    with recorders(mallory, recordings, 10) as pids:
        with victim(user, server, "victim-live") as child:
            reaches_the_store(child, agent.data_dir, "victim-live", "echo PING")
        harness.wait_for(lambda: stored_of(agent.data_dir, mallory) == 3)
        time.sleep(2)
        assert stored_of(agent.data_dir, mallory) == 3  # its share, no more
        assert len(os.listdir(recordings)) == 10  # the others wait, unread
        # The recorders whose sessions are stored go, and those sessions
        # close: every waiting recording gets its turn, none is lost.
        gone: set[int] = set()

        def turns() -> bool:
            stored = {
                s.ssh_pid
                for s in harness.sessions_in(agent.data_dir).values()
                if s.bastion_user == mallory.name
            }
            for pid in stored - gone:
                os.kill(pid, signal.SIGKILL)
                gone.add(pid)
            return stored == set(pids)

        harness.wait_for(turns, 60)
