"""The discovery thread: tagged ssh clients found off the agent's main loop.

It owns the process events socket (tracer/proc_events.py) and the poll
behind it. With events, each exec is looked at as it happens and the poll is a
slow safety net (SAFETY_POLL_S, and at once after the kernel dropped events);
without them (a container, no CAP_NET_ADMIN) it polls every `poll_interval_s`.
What it finds waits in a queue; `fileno()` turns readable then, so the main
loop sleeps on it beside its other fds. A context manager: exit stops and
joins the thread.
"""

from __future__ import annotations

import collections
import logging
import select
import threading
import time

from tracer.discovery import YOUNG_WINDOW_S, Discovery, TaggedSsh
from tracer.proc_events import Kind, ProcEvents, ProcEventsError
from tracer.procfs import set_thread_nice
from tracer.tracker import URGENT_NICE
from tracer.wake import WakePipe

log = logging.getLogger(__name__)

SAFETY_POLL_S = 5.0  # with events: a walk of the process table this often
MID_EXEC_RECHECK_S = 0.01  # an ssh caught before its argv: look again this soon
ERROR_PAUSE_S = 1.0


class DiscoveryThread:
    """Runs a Discovery in its own thread; `take()` hands over what it found."""

    def __init__(
        self, discovery: Discovery, poll_interval_s: float, events: bool = True
    ) -> None:
        self.discovery = discovery
        self.poll_interval_s = poll_interval_s
        self._want_events = events
        self._events: ProcEvents | None = None
        self._found: collections.deque[TaggedSsh] = collections.deque()
        self._lock = threading.Lock()
        self._found_wake = WakePipe()  # the main loop's
        self._stop_wake = WakePipe()  # this thread's
        self._thread: threading.Thread | None = None
        # pid -> when to look again, and until when (caught mid-exec)
        self._recheck: dict[int, tuple[float, float]] = {}

    @property
    def using_events(self) -> bool:
        return self._events is not None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        if self._want_events:
            events = ProcEvents()
            try:
                events.open()
                self._events = events
            except ProcEventsError as e:
                log.warning(
                    "%s; looking for new ssh processes every %.2fs instead",
                    e,
                    self.poll_interval_s,
                )
        # What ran before we listened: one walk now, in this thread.
        self._publish(self.discovery.poll(sweep=True))
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop_wake.wake()
            self._thread.join()
            self._thread = None
        if self._events is not None:
            self._events.close()
            self._events = None
        self._found_wake.close()
        self._stop_wake.close()

    def __enter__(self) -> DiscoveryThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the main loop's side ----------------------------------------------

    def fileno(self) -> int:
        """Readable while found ssh clients wait in `take()`."""
        return self._found_wake.fileno()

    def take(self) -> list[TaggedSsh]:
        self._found_wake.drain()
        with self._lock:
            found = list(self._found)
            self._found.clear()
        return found

    def _publish(self, found: list[TaggedSsh]) -> None:
        if not found:
            return
        with self._lock:
            self._found.extend(found)
        self._found_wake.wake()

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        set_thread_nice(URGENT_NICE)
        poller = select.poll()
        stop_fd = self._stop_wake.fileno()
        poller.register(stop_fd, select.POLLIN)
        if self._events is not None:
            poller.register(self._events.fileno(), select.POLLIN)
        interval = SAFETY_POLL_S if self._events is not None else self.poll_interval_s
        next_poll = time.monotonic() + interval
        while True:
            now = time.monotonic()
            due = min([next_poll, *(when for when, _ in self._recheck.values())])
            ready = poller.poll(max(0.0, due - now) * 1000)
            if any(fd == stop_fd for fd, _ in ready):
                return
            try:
                found = self._round(bool(ready))
                now = time.monotonic()
                if now >= next_poll:
                    found += self.discovery.poll(sweep=self._events is not None)
                    next_poll = now + interval
                self._publish(found)
            except Exception:  # the daemon boundary for this thread
                log.exception("discovery round failed; going on")
                time.sleep(ERROR_PAUSE_S)

    def _round(self, readable: bool) -> list[TaggedSsh]:
        found: list[TaggedSsh] = []
        if readable and self._events is not None:
            events, lost = self._events.read()
            for event in events:
                if event.kind is Kind.EXEC:
                    self._look(event.pid, found)
                elif event.kind is Kind.EXIT:
                    self.discovery.forget(event.pid)
                    self._recheck.pop(event.pid, None)
            if lost:
                log.warning("the kernel dropped process events; walking /proc")
                found += self.discovery.poll(sweep=True)
        now = time.monotonic()
        for pid, (when, _) in list(self._recheck.items()):
            if when <= now:
                self._look(pid, found)
        return found

    def _look(self, pid: int, found: list[TaggedSsh]) -> None:
        mid_exec = self.discovery.stats.mid_exec
        tagged = self.discovery.exec_seen(pid)
        if tagged is not None:
            found.append(tagged)
        now = time.monotonic()
        _, until = self._recheck.pop(pid, (0.0, now + YOUNG_WINDOW_S))
        if self.discovery.stats.mid_exec > mid_exec and now < until:
            self._recheck[pid] = (now + MID_EXEC_RECHECK_S, until)
