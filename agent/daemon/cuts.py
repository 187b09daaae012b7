"""An auditor's terminate: a live session cut as strict mode cuts it.

The control socket's thread asks (`request`), the agent's main loop acts
(`run_pending`, each round), because the supervisor is the main thread's.
A traced ssh is cut by the supervisor (one line on its terminal, SIGTERM,
SIGKILL half a second later); a paramiko session by its audit-shell child,
the process that names it (the same line, SIGTERM: it ends the session and
writes its end line itself; SIGKILL if it has not after CHILD_GRACE_S). In
both cases the ingest is told first, so that the session's end reason names
the auditor and the reason, whatever the log's own end line says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.daemon.ingest import Ingest
from agent.records import Session, SessionStatus
from tracer.discovery import is_alive
from tracer.supervisor import Supervisor
from tracer.terminals import notify_terminal

log = logging.getLogger(__name__)

ANSWER_WITHIN_S = 3.0  # the main loop is woken for it (`wake`)
CHILD_GRACE_S = 5.0  # audit-shell's own STOP_GRACE_S for its child


def end_reason(actor: str, reason: str) -> str:
    return f"terminated by auditor {actor}: {reason}"


def terminal_line(actor: str, reason: str) -> str:
    return f"bastion-audit: this session was ended by auditor {actor}: {reason}"


@dataclass
class _Job:
    session: Session
    actor: str
    reason: str
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""
    abandoned: bool = False  # answered "not in time": must not act after all


class Cutter:
    """Terminates asked for by any thread, carried out by the main loop."""

    def __init__(self, supervisor: Supervisor, ingest: Ingest) -> None:
        self.supervisor = supervisor
        self.ingest = ingest
        self._lock = threading.Lock()
        self._jobs: list[_Job] = []
        self._kills: dict[tuple[int, int], float] = {}  # paramiko children
        self.wake: Callable[[], None] | None = None  # the main loop's, if it sleeps

    def request(self, session: Session, actor: str, reason: str) -> tuple[bool, str]:
        """Cut `session` (any thread): whether it was done, and what happened."""
        if session.status != SessionStatus.LIVE:
            return False, f"session {session.id} is not live ({session.status})"
        job = _Job(session, actor, reason)
        with self._lock:
            self._jobs.append(job)
        if self.wake is not None:
            self.wake()
        if not job.done.wait(ANSWER_WITHIN_S):
            with self._lock:
                if not job.done.is_set():
                    job.abandoned = True
                    return False, "the agent did not get to it in time; try again"
        return job.ok, job.message

    @property
    def killing(self) -> bool:
        """Whether a SIGKILL is due soon (the main loop should not sleep long)."""
        return bool(self._kills)

    def run_pending(self) -> None:
        """Main thread, each round: the terminates asked for, the kills due."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            with self._lock:
                if job.abandoned:
                    continue
            try:
                job.ok, job.message = self._cut(job)
            finally:
                job.done.set()
        now = time.monotonic()
        for identity, due in list(self._kills.items()):
            if not is_alive(identity):
                del self._kills[identity]
            elif now >= due:
                del self._kills[identity]
                _signal(identity[0], signal.SIGKILL)

    def _cut(self, job: _Job) -> tuple[bool, str]:
        session = job.session
        identity = session.identity
        if not is_alive(identity):
            return False, f"session {session.id} has no process left to end"
        self.ingest.cut(identity, end_reason(job.actor, job.reason))
        line = terminal_line(job.actor, job.reason)
        if session.recorder == "paramiko":
            log.warning(
                "session %s: %s; ending audit-shell %d",
                session.id,
                line,
                session.ssh_pid,
            )
            notify_terminal(session.ssh_pid, line)
            _signal(session.ssh_pid, signal.SIGTERM)
            self._kills[identity] = time.monotonic() + CHILD_GRACE_S
            return True, f"session {session.id} terminated"
        if self.supervisor.cut(identity, line):
            return True, f"session {session.id} terminated"
        self.ingest.cut(identity, None)
        return False, f"session {session.id}: its ssh is not traced by this agent"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)
