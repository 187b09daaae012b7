"""When the store's writer flushes: soon after a command, else on its interval.

A new command is written within FLUSH_BATCH_S (the other sessions' commands
of the same moment join it), and flushes are at least FLUSH_MIN_GAP_S apart;
any other change waits for the flush interval. Enter to feed is what this
bounds; the flush rate under many typing sessions is what the gap bounds.
"""

from __future__ import annotations

import threading
import time

FLUSH_BATCH_S = 0.02
FLUSH_MIN_GAP_S = 0.05


class FlushPacer:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._soon = threading.Event()
        self._stop = threading.Event()
        self._last = 0.0

    def soon(self) -> None:
        """A command waits (any thread)."""
        if not self._soon.is_set():
            self._soon.set()

    def stop(self) -> None:
        self._stop.set()
        self._soon.set()

    def wait(self) -> bool:
        """Until the next flush is due (writer thread); False once stopped."""
        if self._soon.wait(self.interval_s) and not self._stop.is_set():
            now = time.monotonic()
            self._stop.wait(max(FLUSH_BATCH_S, self._last + FLUSH_MIN_GAP_S - now))
        if self._stop.is_set():
            return False
        self._soon.clear()
        self._last = time.monotonic()
        return True
