"""Which closed sessions' logs may go: held durably by the store, and old.

A log holds every keystroke: once its session's end is durable in the store
and `log_retention_s` has passed since the end, the ingest deletes it. The
store's writer thread and the ingest say a session ended (closed()); the
ingest thread asks which are due (due()).
"""

from __future__ import annotations

import queue

from agent.records import Session


class LogExpiry:
    """Ended sessions whose logs are kept for now, by log name."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self._closed: queue.SimpleQueue[Session] = queue.SimpleQueue()
        self._expiring: dict[str, Session] = {}  # log name -> its ended session

    def closed(self, session: Session) -> None:
        """Any thread: this ended session is durable; its log may go in time."""
        self._closed.put(session)

    def due(self, now: float) -> list[Session]:
        """Ingest thread: the sessions whose logs are past their retention."""
        while True:
            try:
                session = self._closed.get_nowait()
            except queue.Empty:
                break
            self._expiring[session.log] = session
        due = [
            s
            for s in self._expiring.values()
            if now - (s.ended_at or 0.0) >= self.retention_s
        ]
        for session in due:
            del self._expiring[session.log]
        return due
