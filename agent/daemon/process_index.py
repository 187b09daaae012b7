"""Which stored sessions name which ssh process, by the log that feeds each.

A session is named for good by its ssh's pid and start time; but that pair
is only what a log's start line claims, and a user's recording may claim
anyone's (agent/daemon/spool.py). So the store keeps, per process, one
session per log: a log resumes its own session, and sees every other
session that claims its process (Ingest._open decides what that means).
"""

from __future__ import annotations

from agent.records import Session

Identity = tuple[int, int]


class ProcessIndex:
    """ssh process -> the log that feeds its session -> that session's id."""

    def __init__(self) -> None:
        self._logs: dict[Identity, dict[str, str]] = {}

    def add(self, session: Session) -> None:
        if session.ssh_pid:  # not a connection record still waiting for its ssh
            self._logs.setdefault(session.identity, {})[session.log] = session.id

    def remove(self, session: Session) -> None:
        logs = self._logs.get(session.identity, {})
        if logs.get(session.log) == session.id:
            del logs[session.log]
            if not logs:
                del self._logs[session.identity]

    def of_log(self, identity: Identity, log: str) -> str | None:
        """The id of the session that the log named `log` feeds, if any."""
        logs = self._logs.get(identity, {})
        return logs.get(log) or logs.get("")  # "": stored before logs were named

    def claiming(self, identity: Identity) -> list[str]:
        """The ids of every session that names that process, whichever log."""
        return list(self._logs.get(identity, {}).values())
