"""Account locks: a bastion user a `lock` rule shut out, until a time or an unlock.

The agent (root) writes `LOCKS_DIR/USER.lock`, JSON, when a lock rule
matches; audit-shell and audit-web read it before they open a session and
refuse one while it holds; `audit-agent unlock USER` removes it. Only a
file root owns and nobody else may write, in a directory the same holds
for, counts: the bastion users can read the locks, never make or undo one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from agent.files import write_atomic
from agent.records import iso

DEFAULT_LOCKS_DIR = Path("/var/lib/bastion-audit-locks")
SUFFIX = ".lock"
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
MAX_LOCK_FILE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Lock:
    user: str
    rule: str
    session: str
    locked_at: float
    until: float | None  # None: until an auditor unlocks

    def holds(self, now: float) -> bool:
        return self.until is None or now < self.until

    def describe(self) -> str:
        until = (
            "until an auditor unlocks it"
            if self.until is None
            else (f"until {iso(self.until)}")
        )
        return f"locked by rule {self.rule} (session {self.session}) {until}"


def lock_path(locks_dir: Path, user: str) -> Path | None:
    """Where `user`'s lock lives; None for a name that is no file name."""
    if not _USER_RE.fullmatch(user):
        return None
    return locks_dir / f"{user}{SUFFIX}"


def write_lock(locks_dir: Path, lock: Lock) -> Path:
    """The daemon: lock `lock.user` (a longer lock already there wins)."""
    path = lock_path(locks_dir, lock.user)
    if path is None:
        raise ValueError(f"not a user name: {lock.user!r}")
    locks_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(locks_dir, 0o755)
    old = read_lock(locks_dir, lock.user, lock.locked_at)
    if old is not None and (
        old.until is None or (lock.until is not None and old.until >= lock.until)
    ):
        return path
    doc = {
        "user": lock.user,
        "rule": lock.rule,
        "session": lock.session,
        "locked_at": lock.locked_at,
        "until": lock.until,
    }
    write_atomic(path, json.dumps(doc).encode())
    os.chmod(path, 0o644)
    return path


def remove_lock(locks_dir: Path, user: str) -> Lock | None:
    """`audit-agent unlock USER`: the lock that held, if one did."""
    path = lock_path(locks_dir, user)
    if path is None:
        return None
    lock = read_lock(locks_dir, user, 0.0)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return lock


def read_lock(locks_dir: Path, user: str, now: float | None = None) -> Lock | None:
    """The lock that holds for `user` now, if any (audit-shell, audit-web)."""
    path = lock_path(locks_dir, user)
    if path is None or not _trusted(locks_dir):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) and _root_only(st)):
            return None
        data = os.read(fd, MAX_LOCK_FILE_BYTES)
    finally:
        os.close(fd)
    try:
        doc = json.loads(data)
        until = doc["until"]
        lock = Lock(
            str(doc["user"]),
            str(doc["rule"]),
            str(doc["session"]),
            float(doc["locked_at"]),
            None if until is None else float(until),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if lock.user != user:
        return None
    return lock if lock.holds(time.time() if now is None else now) else None


def refusal(locks_dir: Path, user: str) -> str | None:
    """Why `user` may not open a session now; None when no lock holds."""
    lock = read_lock(locks_dir, user)
    if lock is None:
        return None
    return f"the account {user} is {lock.describe()}; ask an auditor"


def _trusted(locks_dir: Path) -> bool:
    try:
        st = os.stat(locks_dir, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _root_only(st)


def _root_only(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
