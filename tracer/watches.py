"""The supervisor's bookkeeping: one watch per tagged ssh, its pidfd, its timer.

Each watch holds one pidfd at a time: its tracker's while one runs (strace
exits when its ssh does), the ssh's own otherwise. All pidfds sit in one
epoll, so the agent's main loop sleeps on a single fd; timers sit in a heap,
so a round looks only at watches that have something due. Stale heap entries
(a watch rescheduled or gone) are skipped when they come up.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import os
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tracer.discovery import TaggedSsh
from tracer.procfs import is_alive
from tracer.tracker import Tracker, open_pidfd

ATTACH_CHECK_FIRST_S = 0.002  # then doubling: an attach takes a few ms
LATENCY_SAMPLES = 1000


@dataclass(frozen=True)
class Limits:
    """Bounds on what a flood of tagged ssh processes can make the agent do."""

    attach_deadline_s: float = 5.0
    max_sessions: int = 1000
    max_new_sessions_per_s: float = 50.0


@dataclass(frozen=True, slots=True)
class StraceRunning:
    """One strace the supervisor holds, for the agent's status."""

    tracer_pid: int
    tag: str
    ssh_pid: int
    adopted: bool  # left by an earlier agent, watched by pid


@dataclass(frozen=True, slots=True)
class SupervisorSnapshot:
    straces: tuple[StraceRunning, ...]


@dataclass
class SupervisorStats:
    launched: int = 0
    adopted: int = 0
    terminated: int = 0
    untraced: int = 0
    limited: int = 0
    wakeups: int = 0  # watches looked at, by exit or by timer
    attach_latencies_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )


@dataclass
class Watch:
    """One tagged ssh under supervision."""

    ssh: TaggedSsh
    found_at: float  # monotonic: when the agent could first act on it
    tracker: Tracker | None = None
    attaches: int = 0
    traced_at: float | None = None
    next_attempt: float = 0.0
    mux_checked: bool = False
    verdict: str | None = None  # why it is not audited
    pending_verdict: str | None = None  # waits for a record-only tracker
    kill_at: float | None = None  # strict: SIGKILL if still alive by then
    sudo: bool = False  # traced by its user's own session_tracker under sudo
    limited: bool = False  # refused by a limit: not attached again later
    ssh_pidfd: int = -1  # while no tracker runs: learns the ssh's exit
    due: float | None = None  # its next timer
    attach_check_s: float = ATTACH_CHECK_FIRST_S
    launching: bool = False  # a launcher thread is starting its tracker


class Watches:
    """Every watch, the epoll of their pidfds and the heap of their timers."""

    def __init__(self) -> None:
        self.by_identity: dict[tuple[int, int], Watch] = {}
        self._epoll = select.epoll()
        self._by_fd: dict[int, tuple[int, int]] = {}
        self._timers: list[tuple[float, int, tuple[int, int]]] = []
        self._seq = 0
        self._others: set[int] = set()  # fds of the owner's, not of a watch

    def fileno(self) -> int:
        return self._epoll.fileno()

    def __len__(self) -> int:
        return len(self.by_identity)

    def snapshot(self) -> SupervisorSnapshot:
        return SupervisorSnapshot(
            tuple(
                StraceRunning(
                    w.tracker.tracer_pid, w.ssh.tag, w.ssh.pid, w.tracker.popen is None
                )
                for w in self.by_identity.values()
                if w.tracker is not None and w.tracker.running()
            )
        )

    def add_other(self, fd: int) -> None:
        """Wake the owner's loop for `fd` too (`exited()` leaves it out)."""
        self._others.add(fd)
        self._epoll.register(fd, select.EPOLLIN)

    def add(self, watch: Watch) -> None:
        self.by_identity[watch.ssh.identity] = watch

    def remove(self, watch: Watch) -> None:
        """Forget it, closing what it holds (a tracker of ours is reaped)."""
        self.by_identity.pop(watch.ssh.identity, None)
        watch.due = None
        self.drop_tracker(watch)
        self.drop_ssh_fd(watch)

    def close(self) -> None:
        for watch in list(self.by_identity.values()):
            self.remove(watch)
        self._epoll.close()

    # -- what happened ---------------------------------------------------

    def exited(self) -> Iterator[tuple[Watch, int]]:
        """(watch, pidfd) for each pidfd that turned readable."""
        for fd, _ in self._epoll.poll(0):
            if fd in self._others:
                continue
            identity = self._by_fd.get(fd)
            watch = self.by_identity.get(identity) if identity else None
            if watch is None:
                self._unwatch_fd(fd)
                continue
            yield watch, fd

    def due(self, now: float) -> Iterator[Watch]:
        while self._timers and self._timers[0][0] <= now:
            due, _, identity = heapq.heappop(self._timers)
            watch = self.by_identity.get(identity)
            if watch is None or watch.due != due:
                continue
            watch.due = None
            yield watch

    def timeout(self) -> float | None:
        """Seconds until the next timer; None when nothing is due."""
        while self._timers:
            due, _, identity = self._timers[0]
            watch = self.by_identity.get(identity)
            if watch is not None and watch.due == due:
                return max(0.0, due - time.monotonic())
            heapq.heappop(self._timers)  # stale
        return None

    def schedule(self, watch: Watch, due: float) -> None:
        """Look at `watch` at `due`, or earlier if it is due earlier already."""
        if watch.due is not None and watch.due <= due:
            return  # that look decides what comes next
        watch.due = due
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, watch.ssh.identity))

    # -- pidfds ----------------------------------------------------------

    def set_tracker(self, watch: Watch, tracker: Tracker) -> None:
        self.drop_ssh_fd(watch)
        watch.tracker = tracker
        self._watch_fd(tracker.pidfd, watch)

    def drop_tracker(self, watch: Watch) -> Tracker | None:
        tracker, watch.tracker = watch.tracker, None
        if tracker is not None:
            self._unwatch_fd(tracker.pidfd)
            tracker.close()
        return tracker

    def watch_ssh(self, watch: Watch) -> None:
        """Learn the ssh's own exit (no tracker runs on it to tell)."""
        if watch.ssh_pidfd >= 0:
            return
        pidfd = open_pidfd(watch.ssh.pid)
        if pidfd is None:
            self.schedule(watch, time.monotonic())  # gone: finish at once
            return
        watch.ssh_pidfd = pidfd
        self._watch_fd(pidfd, watch)
        if not is_alive(watch.ssh.identity):  # the pid was reused meanwhile
            self.schedule(watch, time.monotonic())

    def drop_ssh_fd(self, watch: Watch) -> None:
        if watch.ssh_pidfd >= 0:
            self._unwatch_fd(watch.ssh_pidfd)
            os.close(watch.ssh_pidfd)
            watch.ssh_pidfd = -1

    def _watch_fd(self, fd: int, watch: Watch) -> None:
        self._by_fd[fd] = watch.ssh.identity
        self._epoll.register(fd, select.EPOLLIN)

    def _unwatch_fd(self, fd: int) -> None:
        if self._by_fd.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
