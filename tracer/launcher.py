"""Trackers started by a few threads, so that a burst is not started one by one.

Starting a process blocks its caller until the child has exec'd (vfork):
on a busy machine that is tens of milliseconds each, which fifty new
sessions would spend one after another in the agent's main loop. The
threads wait in the kernel, without the GIL. What they started waits in a
queue; `fileno()` turns readable then. A context manager: exit stops and
joins the threads; trackers started but not taken are handed back by
`take()` all the same.
"""

from __future__ import annotations

import collections
import queue
import threading
import time

from tracer.procfs import set_thread_nice
from tracer.tracker import URGENT_NICE, Tracker, launch
from tracer.wake import WakePipe

LAUNCH_THREADS = 4

Key = tuple[int, int]  # the ssh's identity


class Launcher:
    """`submit()` a tracker's argv; `take()` the Tracker, or the OSError."""

    def __init__(self, threads: int = LAUNCH_THREADS) -> None:
        self._count = threads
        self._todo: queue.Queue[tuple[Key, list[str], bool] | None] = queue.Queue()
        self._done: collections.deque[tuple[Key, Tracker | OSError]] = (
            collections.deque()
        )
        self._wake = WakePipe()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self._count):
            thread = threading.Thread(
                target=self._run, name=f"launcher-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def close(self) -> None:
        self._wake.close()

    def __enter__(self) -> Launcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fileno(self) -> int:
        return self._wake.fileno()

    def submit(self, key: Key, argv: list[str], record_only: bool = False) -> None:
        if not self._threads:  # not started (a test, or stopping): do it now
            self._done.append((key, self._launch(argv, record_only)))
            self._wake.wake()
            return
        self._todo.put((key, argv, record_only))

    def take(self) -> list[tuple[Key, Tracker | OSError]]:
        self._wake.drain()
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def _run(self) -> None:
        set_thread_nice(URGENT_NICE)  # the trackers it starts inherit it
        while (job := self._todo.get()) is not None:
            key, argv, record_only = job
            self._done.append((key, self._launch(argv, record_only)))
            self._wake.wake()

    @staticmethod
    def _launch(argv: list[str], record_only: bool) -> Tracker | OSError:
        try:
            return launch(argv, time.monotonic(), record_only)
        except OSError as e:
            return e
