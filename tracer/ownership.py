"""Whether the strace holding an ssh is one of ours: the only kind adopted.

Ours means: root's own process (every uid 0), running the very strace binary
session_tracker.sh runs, and holding open exactly the log the agent expects
for this ssh (the file, by device and inode, not a path in its argv: anyone
may run `strace -o /dev/null -P DATA_DIR/logs/x ssh ...`).
"""

from __future__ import annotations

import enum
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from tracer.procfs import exe_key, read_stat_fields, read_uids
from tracer.session_log import find_logs

CHILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # session_tracker.sh's PATH


class Owner(enum.StrEnum):
    AGENT = "agent"  # started by an agent (this one, or one that died)
    SUDO = "sudo"  # a user's `sudo session_tracker.sh TAG` (README: sudo mode)


def strace_binary() -> tuple[int, int] | None:
    """(device, inode) of the strace that session_tracker.sh would run."""
    path = shutil.which("strace", path=CHILD_PATH)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def holds_file(pid: int, dev: int, ino: int) -> bool:
    """Whether one of `pid`'s fds is that file."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if st.st_dev == dev and st.st_ino == ino:
            return True
    return False


def strace_owner(tracer_pid: int, logs: Sequence[Path]) -> Owner | None:
    """AGENT or SUDO if `tracer_pid` is our strace writing one of `logs` (the
    logs of this ssh: tracer/session_log.py find_logs), else None."""
    uids = read_uids(tracer_pid)
    if not logs or uids is None or any(uids):
        return None
    binary = strace_binary()
    exe = exe_key(tracer_pid)
    if binary is None or exe is None or exe[:2] != binary:
        return None
    for log_path in logs:
        try:
            log = os.stat(log_path, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(log.st_mode) or log.st_uid != 0:
            continue
        if holds_file(tracer_pid, log.st_dev, log.st_ino):
            return Owner.SUDO if _parent_is_sudo(tracer_pid) else Owner.AGENT
    return None


def ssh_owner(
    tracer_pid: int, logs_dir: Path, tag: str, identity: tuple[int, int]
) -> Owner | None:
    """Whether `tracer_pid` is our strace writing a log of this ssh."""
    return strace_owner(tracer_pid, find_logs(logs_dir, tag, identity))


def _parent_is_sudo(pid: int) -> bool:
    fields = read_stat_fields(pid)
    if fields is None or len(fields) < 2:
        return False
    parent = int(fields[1])
    try:
        name = os.path.basename(os.readlink(f"/proc/{parent}/exe"))
    except OSError:
        return False
    uids = read_uids(parent)
    return name == "sudo" and uids is not None and uids[1] == 0
