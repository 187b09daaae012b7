"""A pipe that turns readable when woken: how a thread wakes another's poll.

Any number of wake-ups before the sleeper looks cost one read; a full pipe
means it is woken already. Non-blocking both ends; safe from signal handlers.
"""

from __future__ import annotations

import contextlib
import os


class WakePipe:
    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        """Readable after `wake()`, until `drain()`."""
        return self._r

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._w, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
