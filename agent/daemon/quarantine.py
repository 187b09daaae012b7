"""Keeping a copy of a file the agent could not use, for a person to look at.

A session log holds every keystroke, passwords typed at remote prompts
included (README: the store). Its copy (keep()) holds what the screen
showed and the log's own lines, with what was typed redacted, at most
KEEP_MAX_BYTES of it, read from at most the log's first COPY_MAX_BYTES: it
is evidence of what went wrong, not a second record of the session.

Any other file's copy (quarantine()) keeps the file's holes (SEEK_DATA/
SEEK_HOLE) and at most its first COPY_MAX_BYTES: a user's sparse recording
of 8 KiB on disk and 64 MiB long would otherwise cost 64 MiB of the data
disk, and a long one all of it. A move is a rename (holes and all), or such
a copy where the file lives on another filesystem than the quarantine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from pathlib import Path
from typing import IO

KEEP_MAX_BYTES = 16 << 20  # of a session log's copy; the rest is left out
LINE_MAX_BYTES = 8 << 20  # a longer line is left out whole, never held
_READ_BYTES = 1 << 20
# strace's lines of keys read (`read(4</dev/pts/3>, "ls\r", 16384) = 3`, also
# resumed after an interruption) and the paramiko recorder's (`T i BASE64`).
_KEYS_READ = re.compile(
    rb"(?:\[pid +\d+\] )?(?:\d+\.\d+ )?(?:read\(|<\.\.\. read resumed>)"
)
_STRACE_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"(?:\.\.\.)?')
_CHUNK_INPUT = re.compile(rb"(\d+\.\d+ i ).*")

COPY_MAX_BYTES = 64 << 20  # of a file's start, in a copy
_CHUNK_BYTES = 1 << 20


def quarantine(path: Path, quarantine_dir: Path, *, move: bool) -> Path:
    """Move or copy `path` into `quarantine_dir` (root only); the new path."""
    target = _target(path, quarantine_dir)
    if move:
        try:
            os.replace(path, target)  # a symlink moves as itself, never its target
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            _copy(path, target)  # another filesystem: copy, then remove
            os.unlink(path)
            return target
        # Kept from now on (retention counts from the mtime), whatever time a
        # user's file claimed.
        os.utime(target, None, follow_symlinks=False)
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
    """Keep a session log's redacted copy; where, for the one log line saying so.

    `move`: the file is not the agent's to follow (a bad start line, a user's
    decoy): the original goes too. A symlink, a FIFO or a file with other
    links is moved as it is, never read.
    """
    try:
        return str(_keep(path, quarantine_dir, move))
    except OSError as e:
        return f"nowhere ({e.strerror})"


def redact_line(line: bytes) -> bytes:
    """One line of a session log with the keys it records left out (pure)."""
    if _KEYS_READ.match(line):
        return _STRACE_STRING.sub(b'"[redacted]"', line)
    typed = _CHUNK_INPUT.match(line)
    if typed is not None:
        return typed.group(1) + b"[redacted]" + (b"\n" if line.endswith(b"\n") else b"")
    return line


def _keep(path: Path, quarantine_dir: Path, move: bool) -> Path:
    try:
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ELOOP or not move:
            raise
        return quarantine(path, quarantine_dir, move=True)  # the symlink itself
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            if not move:
                raise OSError(errno.EINVAL, "not a plain file", str(path))
            return quarantine(path, quarantine_dir, move=True)
        target = _target(path, quarantine_dir)
        with open(src, "rb", closefd=False) as f_in, _create(target) as f_out:
            _copy_redacted(f_in, f_out)
    finally:
        os.close(src)
    if move:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return target


def _copy_redacted(f_in: IO[bytes], f_out: IO[bytes]) -> None:
    """Line by line, at most KEEP_MAX_BYTES out; no line held past LINE_MAX_BYTES."""
    written = read = 0
    pending = b""
    skipping = 0  # bytes of an over-long line being passed over
    while True:
        if read >= COPY_MAX_BYTES:  # a sparse log may be a terabyte long
            f_out.write(_left_out(f"the rest, past {COPY_MAX_BYTES} bytes read"))
            return
        data = f_in.read(_READ_BYTES)
        if not data:
            break
        read += len(data)
        pending += data
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if skipping:
                skipping += len(line) + 1
                out = _left_out(f"a line of {skipping} bytes")
                skipping = 0
            else:
                out = redact_line(line + b"\n")
            if written + len(out) > KEEP_MAX_BYTES:
                f_out.write(_left_out(f"the rest, past {KEEP_MAX_BYTES} bytes"))
                return
            f_out.write(out)
            written += len(out)
        if len(pending) > LINE_MAX_BYTES:
            skipping += len(pending)
            pending = b""
    if pending or skipping:
        f_out.write(_left_out("an unfinished last line"))


def _left_out(what: str) -> bytes:
    return f"#bastion-audit-quarantine: {what}: left out\n".encode()


def _target(path: Path, quarantine_dir: Path) -> Path:
    quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(quarantine_dir, 0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = quarantine_dir / f"{path.name}.{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = quarantine_dir / f"{path.name}.{stamp}.{n}"
    return target


def _create(target: Path) -> IO[bytes]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return open(os.open(target, flags, 0o600), "wb")
