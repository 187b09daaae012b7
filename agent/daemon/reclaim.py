"""Giving back the disk that a live session's log no longer needs.

A strace log is read once, and a restarted agent resumes it from the
checkpoint stored with the session: the bytes before that checkpoint are never
read again. So once the store holds a checkpoint durably, the agent punches
them out of the file (fallocate(2) FALLOC_FL_PUNCH_HOLE, the file's length
and its offsets unchanged; strace writes on at its end). A session that
prints gigabytes over its life then holds on disk what the ingest has not
read yet, not all it ever printed. The head of the log (its start line) is
kept, for whoever reads it again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import queue
from collections.abc import Callable
from pathlib import Path

from tracer.session_log import START_LINE_MAX_BYTES

log = logging.getLogger(__name__)

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
BLOCK_BYTES = 4096
KEEP_HEAD_BYTES = START_LINE_MAX_BYTES  # a multiple of BLOCK_BYTES
RECLAIM_STEP_BYTES = 1 << 20  # punch again once this much more is durable


Fallocate = Callable[[int, int, int, int], int]


def _fallocate() -> Fallocate | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    func.restype = ctypes.c_int
    fallocate: Fallocate = func
    return fallocate


class Reclaimer:
    """Durable checkpoints in (the store's thread), holes punched (the ingest's)."""

    def __init__(self) -> None:
        self._durable: queue.Queue[tuple[Path, int]] = queue.Queue()
        self._punched: dict[Path, int] = {}  # log -> up to where
        self._fallocate = _fallocate()
        self.reclaimed_bytes = 0

    def durable(self, path: Path, offset: int) -> None:
        """The store holds a checkpoint at `offset` of `path` (any thread)."""
        self._durable.put((path, offset))

    def forget(self, path: Path) -> None:
        self._punched.pop(path, None)

    def run(self) -> None:
        """Punch what became durable since the last call (the ingest thread)."""
        latest: dict[Path, int] = {}
        while True:
            try:
                path, offset = self._durable.get_nowait()
            except queue.Empty:
                break
            latest[path] = max(offset, latest.get(path, 0))
        for path, offset in latest.items():
            end = offset - offset % BLOCK_BYTES
            done = self._punched.get(path, KEEP_HEAD_BYTES)
            if end - done >= RECLAIM_STEP_BYTES and self._fallocate is not None:
                self._punch(path, done, end)

    def _punch(self, path: Path, start: int, end: int) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # gone (the session ended): nothing to give back
        try:
            assert self._fallocate is not None
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            if self._fallocate(fd, mode, start, end - start) != 0:
                e = ctypes.get_errno()
                if e in (errno.EOPNOTSUPP, errno.ENOSYS):
                    log.info("%s cannot punch holes: logs are kept whole", path.parent)
                    self._fallocate = None
                return
        finally:
            os.close(fd)
        self._punched[path] = end
        self.reclaimed_bytes += end - start
