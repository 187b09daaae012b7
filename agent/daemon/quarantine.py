"""Keeping a copy of a file the agent could not use, for a person to look at."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from pathlib import Path


def quarantine(path: Path, quarantine_dir: Path, *, move: bool) -> Path:
    """Move or copy `path` into `quarantine_dir` (root only); the new path."""
    quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(quarantine_dir, 0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = quarantine_dir / f"{path.name}.{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = quarantine_dir / f"{path.name}.{stamp}.{n}"
    if move:
        os.replace(path, target)  # a symlink moves as itself, never its target
        if not target.is_symlink():
            os.chmod(target, 0o600)  # a session log holds everything its user typed
        return target
    # A file in a user's spool may have become a symlink: copy only what the
    # name itself holds, and only a plain file.
    src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise OSError(errno.EINVAL, "not a plain file", str(path))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(target, flags, 0o600)
        with open(src, "rb", closefd=False) as f_in, open(dst, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
    finally:
        os.close(src)
    return target


def keep(path: Path, quarantine_dir: Path, *, move: bool) -> str:
    """Quarantine `path`; where it went, for the one log line that says so."""
    try:
        return str(quarantine(path, quarantine_dir, move=move))
    except OSError as e:
        return f"nowhere ({e.strerror})"
