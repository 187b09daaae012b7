"""One agent per data directory, and one unscoped agent per machine.

ptrace admits one tracer per process: two agents that both trace every
tagged ssh race for each one, and in strict mode the loser ends the session
("already traced by another tracer"). Two agents on one data directory write
the same shards. So the agent holds an flock on DATA_DIR/agent.lock while it
runs and, when it is not scoped (--scope-pid), one on MACHINE_LOCK too; an
agent that cannot take them refuses to start and names the one that holds
them (its pid and data directory, which the holder writes into the file).
Scoped agents (the tests') take only their data directory's lock, so they run
beside each other and beside the service.

The kernel drops a lock when its holder dies, `kill -9` included; the
descriptor is close-on-exec, so the straces never hold it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from agent import AgentError

DATA_DIR_LOCK = "agent.lock"
# The unit's RuntimeDirectory (kept across restarts: RuntimeDirectoryPreserve).
MACHINE_LOCK = Path("/run/bastion-audit/agent.lock")
HOLDER_MAX_BYTES = 4096


class LockError(AgentError):
    """Another agent holds the lock this one needs."""


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it: `pid N, data dir D`."""
    try:
        doc = json.loads(os.pread(fd, HOLDER_MAX_BYTES, 0))
        pid, data_dir = int(doc["pid"]), str(doc["data_dir"])
        scope = int(doc.get("scope_pid") or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it is starting"
    where = f"pid {pid}, data dir {data_dir}"
    return f"{where}, scoped to pid {scope}" if scope else where


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


def take(path: Path, mode: int, holder: dict[str, object], refusal: str) -> int:
    """flock `path` for this process and write `holder` into it; its fd.

    LockError, with `refusal` and who holds it, when another process does.
    """
    fd = _open_lock(path, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        who = _holder(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise LockError(f"{refusal} ({who})") from e
        raise LockError(f"cannot lock {path}: {e.strerror}") from e
    text = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    return fd


@contextlib.contextmanager
def agent_locks(data_dir: Path, scope_pid: int) -> Iterator[None]:
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
            )
        )
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing drops the flock
