"""Which logs changed: inotify on the log directories, read by the ingest thread.

Only what means a log changed is asked for: IN_MODIFY and IN_CLOSE_WRITE (it
grew), IN_CREATE and IN_MOVED_TO (it appeared), IN_DELETE and IN_MOVED_FROM
(it went). Never IN_OPEN, IN_ACCESS or IN_CLOSE_NOWRITE: the ingest's own
reads would cause those, and a log read because it was read is a loop (one
kept a core busy re-reading an unchanged 3 KB log 1,200 times a second).

The ingest thread sleeps on `fileno()` itself: no observer threads and no
queue between them (inotify(7), through libc: Python has no binding).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import struct
from pathlib import Path

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
CHANGES = (
    IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then the name
READ_BYTES = 64 << 10


class LogWatchError(OSError):
    """inotify cannot be used."""


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(
            ctypes.util.find_library("c") or "libc.so.6", use_errno=True
        )
    return _libc


class LogWatch:
    """One inotify instance watching a few directories for changed files."""

    def __init__(self) -> None:
        fd = int(_lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            e = ctypes.get_errno()
            raise LogWatchError(e, f"inotify_init1: {os.strerror(e)}")
        self._fd = fd
        self._dirs: dict[int, Path] = {}
        self.overflows = 0

    def add(self, directory: Path) -> None:
        wd = int(
            _lib().inotify_add_watch(
                self._fd, os.fsencode(directory), CHANGES | IN_ONLYDIR
            )
        )
        if wd < 0:
            e = ctypes.get_errno()
            raise LogWatchError(e, f"cannot watch {directory}: {os.strerror(e)}")
        self._dirs[wd] = directory

    def fileno(self) -> int:
        return self._fd

    def read(self) -> tuple[set[Path], bool]:
        """Files that changed since the last read; and whether some were lost."""
        seen: set[tuple[int, bytes]] = set()  # a log writes many times a read
        lost = False
        while True:
            try:
                data = os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            at = 0
            while at + _EVENT.size <= len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + size].rstrip(b"\0")
                at += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    self.overflows += 1
                    lost = True
                    continue
                if name and not mask & IN_IGNORED:
                    seen.add((wd, name))
        changed = {
            self._dirs[wd] / os.fsdecode(name) for wd, name in seen if wd in self._dirs
        }
        return changed, lost

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
