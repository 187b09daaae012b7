"""One agent per data directory, one unscoped agent per machine (issue 16).

Real agents. The unscoped ones run in a pid and mount namespace of the test's
own (unshare): there they see only the namespace's processes, so they trace
nothing of this machine's, and the machine lock (/run/bastion-audit) is on a
tmpfs of the namespace's, never the real one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

pytestmark = [pytest.mark.root, pytest.mark.slow]


def agent_argv(data_dir: Path, *extra: str) -> list[str]:
    config = data_dir.parent / f"{data_dir.name}.toml"
    config.write_text("")
    return [
        str(harness.BIN / "audit-agent"),
        "run",
        "--data-dir",
        str(data_dir),
        "--config",
        str(config),
        *extra,
    ]


def start(argv: list[str], data_dir: Path) -> subprocess.Popen[bytes]:
    """An agent, once it has written its first status."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    harness.wait_for(
        lambda: (data_dir / "status.json").exists() or process.poll() is not None,
        timeout=20,
    )
    assert process.poll() is None, f"the agent on {data_dir} did not start"
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the agent (nsenter's child, under nsenter), then wait."""
    if process.poll() is None:
        pid = _agent_in(process.pid) or process.pid
        os.kill(pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_second_agent_on_the_same_data_dir_refuses_naming_the_first(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    scope = ("--scope-pid", str(os.getpid()))
    first = start(agent_argv(data_dir, *scope), data_dir)
    try:
        second = subprocess.run(
            agent_argv(data_dir, *scope), capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 2, second.stderr
        assert f"another agent uses the data dir {data_dir}" in second.stderr
        assert f"pid {first.pid}, data dir {data_dir}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        # The refused agent touched nothing of the first one's.
        assert first.poll() is None
        status = harness.run_cli("audit-agent", "status", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stdout
        # A scoped agent on a data dir of its own runs beside it.
        other = tmp_path / "other"
        stop(start(agent_argv(other, *scope), other))
    finally:
        stop(first)


@pytest.fixture
def namespace() -> Iterator[int]:
    """A pid and mount namespace with its own /run; the pid of its first process."""
    holder = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs -o mode=0755 tmpfs /run && echo up && exec sleep 3600",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert harness.LineReader(holder.stdout).readline(10) == "up\n"
        yield _children(holder.pid)[0]  # the namespace's pid 1
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def ns_pid(pid: int) -> int:
    """`pid` (seen from here) as its own pid namespace numbers it."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("NSpid:"))
    return int(line.split()[-1])


def in_namespace(target: int, argv: list[str]) -> list[str]:
    return ["nsenter", "--target", str(target), "--pid", "--mount", "--", *argv]


def test_a_second_unscoped_agent_on_the_machine_refuses_naming_the_first(
    tmp_path: Path, namespace: int
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first = start(in_namespace(namespace, agent_argv(first_dir)), first_dir)
    try:
        agent_pid = harness.wait_for(lambda: _agent_in(first.pid))
        second = subprocess.run(
            in_namespace(namespace, agent_argv(second_dir)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2, second.stderr
        assert "another unscoped agent audits this machine" in second.stderr
        assert "--scope-pid" in second.stderr
        named = re.search(r"pid (\d+), data dir (\S+)\)", second.stderr)
        assert named, second.stderr
        assert (int(named[1]), named[2]) == (ns_pid(agent_pid), str(first_dir))
        assert not (second_dir / "store").exists()
        # Scoped agents run beside it, on their own data dirs.
        scoped_dir = tmp_path / "scoped"
        scope = ("--scope-pid", str(ns_pid(agent_pid)))
        stop(start(in_namespace(namespace, agent_argv(scoped_dir, *scope)), scoped_dir))
        # kill -9 frees the lock: the next agent starts.
        os.kill(agent_pid, signal.SIGKILL)
        first.wait(10)
        stop(start(in_namespace(namespace, agent_argv(second_dir)), second_dir))
    finally:
        stop(first)


def _agent_in(pid: int) -> int | None:
    """The audit-agent process: `pid` itself, or nsenter's child."""
    for candidate in (pid, *_children(pid)):
        try:
            with open(f"/proc/{candidate}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"nsenter") and any(b"audit-agent" in a for a in argv):
            return candidate
    return None


def test_the_data_dirs_lock_is_also_prunes_and_an_agent_waits_for_a_prune(
    tmp_path: Path,
) -> None:
    """`audit-agent prune` without an agent holds the same lock (one writer)."""
    import threading

    from agent.daemon.lock import LockError, agent_locks, prune_lock

    pid = os.getpid()
    with (
        prune_lock(tmp_path),
        pytest.raises(LockError, match="audit-agent prune, pid"),
        agent_locks(tmp_path, scope_pid=pid),
    ):
        pass
    held, released = threading.Event(), threading.Event()

    def prune_briefly() -> None:
        with prune_lock(tmp_path):
            held.set()
            released.wait(0.3)

    pruning = threading.Thread(target=prune_briefly)
    pruning.start()
    try:
        assert held.wait(10)
        with (
            agent_locks(tmp_path, scope_pid=pid, prune_wait_s=10.0),
            pytest.raises(LockError, match="another process writes"),
            prune_lock(tmp_path),
        ):
            pass
    finally:
        released.set()
        pruning.join()
