"""Writing a file so that a reader or a crash sees the old version or the new.

And who may read what the daemon writes: root only (0700 directories, 0600
files), or also the members of one group (`read_group`, for audit-web), for
the store, the recordings and the status; never the raw logs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
IOV_MAX = 1024  # parts a writev takes (Linux's UIO_MAXIOV)


def write_atomic(
    path: Path,
    data: bytes | Sequence[bytes | bytearray | memoryview],
    mode: int = PRIVATE_FILE_MODE,
) -> None:
    """Replace `path` with `data` so that it is whole, durable, or untouched.

    `data` may come in parts (written in order, with writev: the store's
    newest shard is a few large parts, not copied into one).
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if mode != PRIVATE_FILE_MODE:
            os.fchmod(fd, mode)  # the umask (systemd's 0077) does not apply here
        chunks = [data] if isinstance(data, bytes) else data
        parts = [memoryview(chunk) for chunk in chunks]
        while parts:
            done = os.writev(fd, parts[:IOV_MAX])
            while parts and done >= len(parts[0]):  # a short write: go on from there
                done -= len(parts.pop(0))
            if parts:
                parts[0] = parts[0][done:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        # A full disk: the half-written copy must not keep the space it took.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def write_whole(path: Path, data: bytes) -> None:
    """`path` (0600) holding `data`, every byte written: no fsync, no rename."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Sharing:
    """Modes for what a group may read: `gid` None is root only.

    A shared directory is setgid, so that what the daemon creates in it
    belongs to the group without a chown per file; the file modes are set
    with fchmod, past the daemon's umask.
    """

    gid: int | None = None

    @property
    def file_mode(self) -> int:
        return 0o640 if self.gid is not None else PRIVATE_FILE_MODE

    @property
    def dir_mode(self) -> int:
        return 0o2750 if self.gid is not None else 0o700

    def directory(self, path: Path, suffixes: tuple[str, ...] = ()) -> None:
        """Make `path` (and its files ending in `suffixes`) as shared as this says."""
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        root = os.geteuid() == 0
        if root:
            os.chown(path, 0, self.gid or 0)
        os.chmod(path, self.dir_mode)
        if not suffixes:
            return
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.endswith(suffixes) and entry.is_file(
                    follow_symlinks=False
                ):
                    with contextlib.suppress(FileNotFoundError):
                        if root:
                            os.chown(entry.path, -1, self.gid or 0)
                        os.chmod(entry.path, self.file_mode)
