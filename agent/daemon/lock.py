"""One writer per data directory, and one unscoped agent per machine.

ptrace admits one tracer per process: two agents that both trace every
tagged ssh race for each one, and in strict mode the loser ends the session
("already traced by another tracer"). Two writers of one data directory
(two agents, or an agent and `audit-agent prune`) write the same shards,
chain and recordings. So its writer holds an flock on DATA_DIR/agent.lock:
the agent while it runs, `audit-agent prune` while it prunes alone (with an
agent running, prune asks it instead). An agent not scoped (--scope-pid)
also holds MACHINE_LOCK. Whoever cannot take a lock says who holds it (the
pid and data directory the holder writes into the file); an agent starting
while a prune holds the data directory waits for it, up to a deadline.
Scoped agents (the tests') take only their data directory's lock, so they run
beside each other and beside the service.

The kernel drops a lock when its holder dies, `kill -9` included, so a lock
is never left stale; the descriptor is close-on-exec, so the straces never
hold it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from agent import AgentError

DATA_DIR_LOCK = "agent.lock"
# The unit's RuntimeDirectory (kept across restarts: RuntimeDirectoryPreserve).
MACHINE_LOCK = Path("/run/bastion-audit/agent.lock")
HOLDER_MAX_BYTES = 4096
LOCK_POLL_S = 0.1
PRUNE = "prune"  # the holder's `command` while audit-agent prune holds the lock


class LockError(AgentError):
    """Another process holds the lock this one needs."""


def _holder(fd: int) -> tuple[str, bool]:
    """Who holds the lock, as the holder wrote it; whether it is a prune."""
    try:
        doc = json.loads(os.pread(fd, HOLDER_MAX_BYTES, 0))
        pid, data_dir = int(doc["pid"]), str(doc["data_dir"])
        scope = int(doc.get("scope_pid") or 0)
        pruning = doc.get("command") == PRUNE
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it is starting", False
    where = f"pid {pid}, data dir {data_dir}"
    if pruning:
        return f"audit-agent prune, {where}", True
    return (f"{where}, scoped to pid {scope}" if scope else where), False


def _open_lock(path: Path, mode: int) -> int:
    parent = path.parent
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = os.stat(parent, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise LockError(f"{parent} must be a directory only root may write")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, mode)
    except OSError as e:
        raise LockError(f"cannot open lock file {path}: {e.strerror}") from e


def take(
    path: Path,
    mode: int,
    holder: dict[str, object],
    refusal: str,
    prune_wait_s: float = 0.0,
) -> int:
    """flock `path` for this process and write `holder` into it; its fd.

    LockError, with `refusal` and who holds it, when another process does
    (after up to `prune_wait_s` of waiting, while that one is a prune).
    """
    fd = _open_lock(path, mode)
    deadline = time.monotonic() + prune_wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            who, pruning = _holder(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                if pruning and time.monotonic() < deadline:
                    time.sleep(LOCK_POLL_S)
                    continue
                os.close(fd)
                raise LockError(f"{refusal} ({who})") from e
            os.close(fd)
            raise LockError(f"cannot lock {path}: {e.strerror}") from e
    text = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    return fd


@contextlib.contextmanager
def agent_locks(
    data_dir: Path, scope_pid: int, prune_wait_s: float = 0.0
) -> Iterator[None]:
    """Hold the machine's lock (unscoped only) and the data directory's."""
    holder: dict[str, object] = {
        "pid": os.getpid(),
        "data_dir": str(data_dir),
        "scope_pid": scope_pid,
    }
    fds: list[int] = []
    try:
        if not scope_pid:
            fds.append(
                take(
                    MACHINE_LOCK,
                    0o644,
                    holder,
                    "another unscoped agent audits this machine; stop it "
                    "(systemctl stop bastion-audit), or run this one with "
                    "--scope-pid PID and a data dir of its own",
                )
            )
        fds.append(
            take(
                data_dir / DATA_DIR_LOCK,
                0o600,
                holder,
                f"another agent uses the data dir {data_dir}",
                prune_wait_s,
            )
        )
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def prune_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock as `audit-agent prune`; LockError if taken."""
    holder = {"pid": os.getpid(), "data_dir": str(data_dir), "command": PRUNE}
    fd = take(
        data_dir / DATA_DIR_LOCK,
        0o600,
        holder,
        f"another process writes the data dir {data_dir}",
    )
    try:
        yield
    finally:
        os.close(fd)
