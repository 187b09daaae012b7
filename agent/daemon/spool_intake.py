"""New files of the paramiko recordings spool, taken in by the ingest in turn.

A file new to the ingest (from inotify or the spool's listing) waits in a
queue; each round looks at most LOOKS_PER_ROUND of them, after the logs being
followed, so that a flood waits behind the sessions already audited. A file
looked at goes through its uid's gate (agent/daemon/spool_guard.py): read
only if new or changed, followed if its uid has room and a token, removed
once stale, kept in quarantine only while its uid's tokens last.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Container
from pathlib import Path

from agent.daemon.follower import LogFollower
from agent.daemon.quarantine import keep
from agent.daemon.spool import Proven, SpoolError, read_recording_start
from agent.daemon.spool_guard import LOOKS_PER_ROUND, RecordingGate
from tracer.session_log import SessionLogError, SessionStart

log = logging.getLogger(__name__)

Opener = Callable[[Path, SessionStart], LogFollower]


class SpoolIntake:
    """The queue of spool files to look at, and the look itself."""

    def __init__(self, gate: RecordingGate, quarantine_dir: Path) -> None:
        self.gate = gate
        self.quarantine_dir = quarantine_dir
        self._queue: collections.deque[Path] = collections.deque()
        self._queued: set[Path] = set()

    def arrive(self, path: Path, followed: Container[Path]) -> None:
        if path not in self._queued and path not in followed:
            self._queued.add(path)
            self._queue.append(path)

    def take(self) -> list[Path]:
        """This round's share of the queue, oldest first."""
        paths = []
        for _ in range(min(LOOKS_PER_ROUND, len(self._queue))):
            path = self._queue.popleft()
            self._queued.discard(path)
            paths.append(path)
        return paths

    @property
    def waiting(self) -> bool:
        return bool(self._queue)

    def new_follower(
        self, path: Path, open_follower: Opener, proven: Proven
    ) -> LogFollower | None:
        """A follower for `path`, if its gate lets it in now.

        `proven`: whether a recording's proof matches its connection record
        (agent/daemon/spool.py: how a recording's identity is proved).
        """
        gate = self.gate
        entry = gate.look(path)
        if entry is None:
            return None  # unchanged since the last look, or waits its turn
        try:
            start = read_recording_start(path, proven)
            if start is None:  # the first line is not written yet
                gate.incomplete(entry)
                return None
            if not gate.may_follow(entry):
                return None
            return open_follower(path, start)
        except FileNotFoundError:
            gate.gone(path)
            return None
        except (SessionLogError, SpoolError) as e:
            if not gate.may_quarantine(entry):  # a flood of junk: removed
                gate.budget.refused(entry.uid, path.parent, str(e))
                gate.drop(path)
                return None
            where = keep(path, self.quarantine_dir, move=True)
            log.error("%s; moved it to %s, left out of the store", e, where)
            gate.gone(path)
            return None
