"""How full the data disk is, and what the agent does about it.

A session log grows with everything its ssh writes (`cat /dev/urandom |
base64` in one session filled the disk, after which store writes failed for
everyone). So the agent keeps `disk_reserve_bytes` free for its store, its
recordings and its status:

- below the reserve (LOW), a new tagged ssh gets the mode's verdict: strict
  refuses it, permissive lets it go on untraced, with the gap marked;
- below half of it, or once a write failed for lack of space (FULL), the
  live sessions get it too: their logs could no longer be written whole;
- with the reserve free again, new sessions are traced as before. What could
  not be written waits in memory (the store) or is marked as not recorded
  (the recordings); nothing already stored is touched.

The main loop checks every CHECK_INTERVAL_S (one statvfs); the store and the
recorder report a failed write from their threads (no_space()).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.5
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskState(enum.StrEnum):
    OK = "ok"
    LOW = "low"  # below the reserve: new sessions get the mode's verdict
    FULL = "full"  # below half of it, or a write failed: live sessions too


@dataclass(frozen=True, slots=True)
class DiskSnapshot:
    """What `audit-agent status` shows of the data disk."""

    free_bytes: int
    reserve_bytes: int
    state: DiskState
    since: float | None  # when it left OK
    no_space_errors: int  # writes that failed for lack of space


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class DiskGuard:
    """The data disk's free space against the reserve (main loop, mostly)."""

    def __init__(self, data_dir: Path, reserve_bytes: int) -> None:
        self.data_dir = data_dir
        self.reserve_bytes = reserve_bytes
        self.state = DiskState.OK
        self.free_bytes = 0
        self.since: float | None = None
        self._checked_at = 0.0
        self._failed_at = 0.0  # monotonic: the last write that found no space
        self._errors = 0
        self._lock = threading.Lock()

    def no_space(self, error: OSError) -> bool:
        """A write failed: True if for lack of space (any thread)."""
        if error.errno not in NO_SPACE:
            return False
        with self._lock:
            self._errors += 1
            self._failed_at = time.monotonic()
        return True

    def check(self) -> DiskState:
        """The state now; looks at the disk at most every CHECK_INTERVAL_S."""
        now = time.monotonic()
        if now - self._checked_at < CHECK_INTERVAL_S:
            return self.state
        self._checked_at = now
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return self.state
        self.free_bytes = st.f_bavail * st.f_frsize
        with self._lock:
            failed_recently = now - self._failed_at < 2 * CHECK_INTERVAL_S
        if self.free_bytes < self.reserve_bytes // 2 or failed_recently:
            state = DiskState.FULL
        elif self.free_bytes < self.reserve_bytes:
            state = DiskState.LOW
        else:
            state = DiskState.OK
        if state != self.state:
            self._changed(state)
        return state

    def _changed(self, state: DiskState) -> None:
        free, reserve = mib(self.free_bytes), mib(self.reserve_bytes)
        if state == DiskState.OK:
            log.warning(
                "data disk of %s: %s free again (reserve %s); new sessions are "
                "traced again",
                self.data_dir,
                free,
                reserve,
            )
            self.since = None
        else:
            log.error("data disk of %s: %s", self.data_dir, self.reason(state))
            if self.since is None:
                self.since = time.time()
        self.state = state

    def reason(self, state: DiskState | None = None) -> str:
        """Why sessions get the mode's verdict, for the log and the session."""
        state = state or self.state
        free, reserve = mib(self.free_bytes), mib(self.reserve_bytes)
        if state == DiskState.FULL:
            return f"the data disk is full ({free} free, reserve {reserve})"
        return f"the data disk is nearly full ({free} free, reserve {reserve})"

    def snapshot(self) -> DiskSnapshot:
        with self._lock:
            errors = self._errors
        return DiskSnapshot(
            self.free_bytes, self.reserve_bytes, self.state, self.since, errors
        )


class WriteFailures:
    """A writer's failed writes: logged when they start and when they end.

    A full disk fails every flush (five a second): one line, not a flood;
    and the disk guard hears of it.
    """

    def __init__(self, what: str, disk: DiskGuard | None = None) -> None:
        self.what = what
        self.disk = disk
        self.in_a_row = 0

    def failed(self, error: OSError) -> None:
        if self.disk is not None:
            self.disk.no_space(error)
        if not self.in_a_row:
            log.error(
                "cannot write %s: %s; what is not written waits in memory and is "
                "retried",
                self.what,
                error,
            )
        self.in_a_row += 1

    def worked(self) -> None:
        if self.in_a_row:
            log.warning(
                "%s written again (after %d failed tries)", self.what, self.in_a_row
            )
        self.in_a_row = 0
