"""The supervisor, with the verdicts the agent gives for reasons of its own.

tracer/supervisor.py judges what it sees of the straces; the agent also ends
(strict) or stops tracing (permissive) a session whose log passed its budget
and, while the data disk is nearly full, every new session (agent/daemon/
disk.py). Such a verdict is for good: the session is not attached again, so
in permissive mode its gap stays open until it ends. LogBudget carries the
ingest's finding of a log past its budget to the main loop.
"""

from __future__ import annotations

import logging
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path

from agent.daemon.disk import mib
from tracer.discovery import TaggedSsh
from tracer.supervisor import KILL_GRACE_S, MAX_ATTACHES, Supervisor
from tracer.watches import Watch

log = logging.getLogger(__name__)

STOP_WAIT_S = 2 * KILL_GRACE_S  # for an adopted strace to let go


class AgentSupervisor(Supervisor):
    """Supervisor, plus give_verdict(): the mode's verdict on the agent's word."""

    def give_verdict(self, ssh: TaggedSsh, reason: str) -> bool:
        """Judge `ssh` (tracked or new) for `reason`; False if judged before."""
        self.changes += 1
        watch = self.watches.get(ssh.identity)
        if watch is None:
            watch = Watch(ssh, found_at=time.monotonic())
            self._watches.add(watch)
        if watch.verdict is not None or watch.pending_verdict is not None:
            return False
        tracker = watch.tracker
        if (
            not self.strict(ssh)
            and tracker is not None
            and tracker.popen is None
            and tracker.running()
        ):
            # The supervisor detaches the straces it started; one adopted
            # from an earlier agent is stopped here, so that its log stops
            # growing and its gap can be marked.
            tracker.signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT_S
            while tracker.running() and time.monotonic() < deadline:
                time.sleep(0.02)
        self._judge(watch, reason)
        # Never attached again: the gap stays open.
        watch.attaches, watch.limited = MAX_ATTACHES, True
        return True


class LogBudget:
    """Strace logs past `max_bytes`: noticed by the ingest, judged by the main loop."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # 0: no bound
        self._found: queue.Queue[tuple[tuple[int, int], str]] = queue.Queue()
        self._asked: set[Path] = set()
        self.on_found: Callable[[], None] | None = None  # wakes the main loop

    def check(
        self, path: Path, session_id: str, identity: tuple[int, int], size: int
    ) -> None:
        """A log of `size` bytes (ingest thread): past the bound, once, ask."""
        if not 0 < self.max_bytes < size or path in self._asked:
            return
        self._asked.add(path)
        reason = f"its log passed {mib(self.max_bytes)} (log_max_bytes)"
        log.error("session %s: %s", session_id, reason)
        self._found.put((identity, reason))
        if self.on_found is not None:
            self.on_found()

    def forget(self, path: Path) -> None:
        self._asked.discard(path)

    def take(self) -> list[tuple[tuple[int, int], str]]:
        """The sessions found past the bound since the last call (any thread)."""
        found = []
        while True:
            try:
                found.append(self._found.get_nowait())
            except queue.Empty:
                return found
