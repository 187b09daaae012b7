"""Keeping a copy of a file the agent could not use, for a person to look at.

A copy keeps the file's holes (SEEK_DATA/SEEK_HOLE) and at most its first
COPY_MAX_BYTES: a user's sparse recording of 8 KiB on disk and 64 MiB long
would otherwise cost 64 MiB of the data disk, and a long one all of it. A
move is a rename (holes and all), or such a copy where the file lives on
another filesystem than the quarantine.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

COPY_MAX_BYTES = 64 << 20  # of a file's start, in a copy
_CHUNK_BYTES = 1 << 20


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
        try:
            os.replace(path, target)  # a symlink moves as itself, never its target
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            _copy(path, target)  # another filesystem: copy, then remove
            os.unlink(path)
            return target
        if not target.is_symlink():
            os.chmod(target, 0o600)  # a session log holds everything its user typed
        return target
    _copy(path, target)
    return target


def _copy(path: Path, target: Path) -> None:
    # A file in a user's spool may have become a symlink: copy only what the
    # name itself holds, and only a plain file.
    src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise OSError(errno.EINVAL, "not a plain file", str(path))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(target, flags, 0o600)
        try:
            copy_sparse(src, dst, COPY_MAX_BYTES)
        except BaseException:
            os.close(dst)
            os.unlink(target)  # no half copy left on a full disk
            raise
        os.close(dst)
    finally:
        os.close(src)


def copy_sparse(src: int, dst: int, limit: int) -> int:
    """The data of `src` up to `limit` bytes into `dst`, holes kept as holes.

    Returns the length of the copy (the file's, or `limit` if it is longer).
    """
    end = min(os.fstat(src).st_size, limit)
    offset = 0
    while offset < end:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # nothing but a hole from here on
                break
            raise
        if data >= end:
            break
        hole = min(os.lseek(src, data, os.SEEK_HOLE), end)
        while data < hole:
            chunk = os.pread(src, min(_CHUNK_BYTES, hole - data), data)
            if not chunk:
                break
            os.pwrite(dst, chunk, data)
            data += len(chunk)
        offset = hole
    os.ftruncate(dst, end)  # the length, and a hole at the end stays one
    return end


def keep(path: Path, quarantine_dir: Path, *, move: bool) -> str:
    """Quarantine `path`; where it went, for the one log line that says so."""
    try:
        size = os.stat(path, follow_symlinks=False).st_size
        where = str(quarantine(path, quarantine_dir, move=move))
    except OSError as e:
        return f"nowhere ({e.strerror})"
    if not move and size > COPY_MAX_BYTES:
        where += f" (its first {COPY_MAX_BYTES >> 20} MiB of {size} bytes)"
    return where
