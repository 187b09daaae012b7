"""Which stored sessions name which ssh process, by the log that feeds each.

A session is named for good by its ssh's pid and start time; but that pair
is only what a log's start line claims, and a user's recording may claim
anyone's (agent/daemon/spool.py). So the store keeps, per process, one
session per log: a log resumes its own session, and sees every other
session that claims its process (Ingest._open decides what that means).
"""

from __future__ import annotations

import threading

from agent.records import Session

Identity = tuple[int, int]


class ProcessIndex:
    """ssh process -> the log that feeds its session -> that session, newest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the ingest asks, the store's writers add
        self._logs: dict[Identity, dict[str, Session]] = {}

    def add(self, session: Session) -> None:
        if not session.ssh_pid:  # a connection record still waiting for its ssh
            return
        with self._lock:
            self._logs.setdefault(session.identity, {})[session.log] = session

    def remove(self, session: Session) -> None:
        with self._lock:
            logs = self._logs.get(session.identity, {})
            if session.log in logs and logs[session.log].id == session.id:
                del logs[session.log]
                if not logs:
                    del self._logs[session.identity]

    def find(self, identity: Identity, log: str) -> Session | None:
        """The session of that process that the log named `log` feeds."""
        with self._lock:
            logs = self._logs.get(identity, {})
            return logs.get(log) or logs.get("")  # "": stored before logs were named

    def claims(self, identity: Identity) -> list[Session]:
        """Every session that names that process, whichever log feeds it."""
        with self._lock:
            return list(self._logs.get(identity, {}).values())
