"""The supervisor, with the verdicts the agent gives for reasons of its own.

tracer/supervisor.py judges what it sees of the straces; the agent also ends
(strict) or stops tracing (permissive) a session whose log passed its budget
and, while the data disk is nearly full, every new session (agent/daemon/
disk.py). Such a verdict is for good: the session is not attached again, so
in permissive mode its gap stays open until it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from tracer import Mode
from tracer.discovery import TaggedSsh
from tracer.supervisor import KILL_GRACE_S, MAX_ATTACHES, Supervisor, Watch

STOP_WAIT_S = 2 * KILL_GRACE_S  # for an adopted strace to let go


class AgentSupervisor(Supervisor):
    """Supervisor, plus give_verdict(): the mode's verdict on the agent's word."""

    def give_verdict(self, ssh: TaggedSsh, reason: str) -> bool:
        """Judge `ssh` (tracked or new) for `reason`; False if judged before."""
        watch = self.watches.setdefault(ssh.identity, Watch(ssh, time.monotonic()))
        if watch.verdict is not None:
            return False
        tracker = watch.tracker
        if (
            self.mode == Mode.PERMISSIVE
            and tracker is not None
            and tracker.popen is None
            and tracker.running()
        ):
            # The supervisor detaches the straces it started; one adopted
            # from an earlier agent is stopped here, so that its log stops
            # growing and its gap can be marked.
            with contextlib.suppress(ProcessLookupError):
                os.kill(tracker.tracer_pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT_S
            while tracker.running() and time.monotonic() < deadline:
                time.sleep(0.02)
        self._judge(watch, reason)
        watch.attaches = MAX_ATTACHES  # never attached again: the gap stays open
        return True
