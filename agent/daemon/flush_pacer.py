"""When the store's writer flushes: soon after a command, else on its interval.

A new command is written within FLUSH_BATCH_S (the other sessions' commands
of the same moment join it), and flushes are at least FLUSH_MIN_GAP_S apart;
any other change waits for the flush interval. Enter to feed is what this
bounds; the flush rate under many typing sessions is what the gap bounds.

A thread that submits batches of its own (the ingest's rounds) holds the
pacer meanwhile: its commands wake no one, and they are its to flush when it
lets go, in the thread that is awake anyway, or at `held_due` if the gap has
not passed (the writer takes them too if its interval comes first). The
same ingest work cost 1.4 ms of CPU 20 ms after a sleep and 0.5 to 0.7 ms
without one (its caches cold, on the 2-core VM), and the writer, woken for
each flush, woke a dozen times a flush.
"""

from __future__ import annotations

import threading
import time

FLUSH_BATCH_S = 0.02
FLUSH_MIN_GAP_S = 0.04  # under the ingest's ROUND_S: each round flushes


class FlushPacer:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._soon = threading.Event()
        self._stop = threading.Event()
        self._last = 0.0
        self._lock = threading.Lock()
        self._holds = 0
        self._deferred = False  # a command came while held

    def soon(self) -> None:
        """A command waits (any thread)."""
        with self._lock:
            if self._holds:
                self._deferred = True
                return
        if not self._soon.is_set():
            self._soon.set()

    def hold(self) -> None:
        """Commands submitted from now on are the holder's (any thread)."""
        with self._lock:
            self._holds += 1

    def release(self) -> bool:
        """True: the holder flushes now; else it does at held_due() (or the writer)."""
        with self._lock:
            self._holds -= 1
            now = time.monotonic()
            if self._holds or not self._deferred or now < self._last + FLUSH_MIN_GAP_S:
                return False
            self._deferred = False
            self._last = now  # this flush is the gap's
            return not self._stop.is_set()

    def held_due(self) -> float | None:
        """When the holder's commands are due (time.monotonic()); None: none wait."""
        with self._lock:
            return self._last + FLUSH_MIN_GAP_S if self._deferred else None

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
        with self._lock:
            self._last = time.monotonic()
            self._deferred = False  # the holder's are flushed too
        return True
