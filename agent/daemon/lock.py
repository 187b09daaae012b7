"""One writer per store: the running agent, or an `audit-agent prune` alone.

The writer holds an exclusive flock on DATA_DIR/store/.writer.lock for as
long as it may write shards; the kernel drops it when the process ends, even
by `kill -9`, so a lock is never left stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from agent import AgentError

LOCK_NAME = ".writer.lock"
LOCK_POLL_S = 0.1


class WriterBusy(AgentError):
    """Another process writes this store."""


@contextlib.contextmanager
def writer_lock(store_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the store's writer lock; WriterBusy if it is not free within `wait_s`."""
    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = store_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise WriterBusy(
                        f"another process writes {store_dir} (a running agent, or "
                        "audit-agent prune)"
                    ) from e
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)
