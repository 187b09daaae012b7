"""One strace per tagged ssh: started, watched, reaped and stopped here.

Each strace runs through scripts/session_tracker.sh, which execs it, so the
child we hold is strace itself: in its own session (a Ctrl-C on the agent's
terminal or a signal to its process group does not reach it), with a fixed
PATH and LC_ALL=C. A strace left by an agent that died (kill -9) is adopted:
it keeps writing its log and is watched by pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tracer.discovery import TaggedSsh, is_alive
from tracer.session_log import (
    SessionLogError,
    append_marker,
    find_log,
    has_ended,
    read_start,
)

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 3.0
MAX_ATTACHES = 3  # a strace that keeps dying is not restarted forever
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass
class Tracker:
    ssh: TaggedSsh
    popen: subprocess.Popen[bytes] | None  # None: adopted, watched by pid
    tracer_pid: int
    attaches: int = 1

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            return bool(
                psutil.Process(self.tracer_pid).status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


class Supervisor:
    """Owns every strace the agent starts or adopts."""

    def __init__(self, script: Path, data_dir: Path) -> None:
        self.script = script
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.trackers: dict[tuple[int, int], Tracker] = {}

    def track(self, ssh: TaggedSsh) -> None:
        """Make sure this tagged ssh is traced."""
        if ssh.identity in self.trackers:
            return
        if ssh.tracer_pid:
            owner = self._strace_owner(ssh.tracer_pid)
            if owner == "agent":
                log.info("session %s: adopted strace %d", ssh.tag, ssh.tracer_pid)
                self.trackers[ssh.identity] = Tracker(ssh, None, ssh.tracer_pid)
            elif owner == "sudo":
                log.info("session %s: traced by its user's session_tracker", ssh.tag)
            else:
                log.error(
                    "session %s: ssh %d is already traced by process %d; not audited",
                    ssh.tag,
                    ssh.pid,
                    ssh.tracer_pid,
                )
            return
        self._launch(ssh, attaches=1)

    def _launch(self, ssh: TaggedSsh, attaches: int) -> None:
        argv = [
            str(self.script),
            "--data-dir",
            str(self.data_dir),
            "--pid",
            str(ssh.pid),
            ssh.tag,
        ]
        try:
            popen = subprocess.Popen(
                argv,
                env=CHILD_ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            log.error("session %s: cannot run %s: %s", ssh.tag, self.script, e.strerror)
            return
        self.trackers[ssh.identity] = Tracker(ssh, popen, popen.pid, attaches)

    def _strace_owner(self, pid: int) -> str | None:
        """'agent' or 'sudo' if `pid` is a strace writing into our logs, else None."""
        try:
            proc = psutil.Process(pid)
            argv = proc.cmdline()
            parent = proc.parent()
            parent_name = parent.name() if parent is not None else ""
        except psutil.Error:
            return None
        if not argv or os.path.basename(argv[0]) != "strace":
            return None
        prefix = f"{self.logs_dir}/"
        if not any(arg.startswith(prefix) for arg in argv):
            return None
        return "sudo" if parent_name == "sudo" else "agent"

    def reap(self) -> None:
        """Notice straces that ended; close or re-attach their sessions."""
        for identity, tracker in list(self.trackers.items()):
            if tracker.running():
                continue
            del self.trackers[identity]
            rc = tracker.popen.returncode if tracker.popen is not None else None
            ssh = tracker.ssh
            path = find_log(self.logs_dir, ssh.tag, identity)
            if not is_alive(identity):
                if path is not None and not has_ended(path):
                    append_marker(path, "end", reason="ssh is gone")
                continue
            if path is None:
                log.error(
                    "session %s: session_tracker.sh exited %s before attaching; "
                    "ssh %d is not audited",
                    ssh.tag,
                    rc,
                    ssh.pid,
                )
                continue
            log.error(
                "session %s: strace exited %s while ssh %d runs", ssh.tag, rc, ssh.pid
            )
            append_marker(path, "detach", reason=f"strace exited {rc}")
            if tracker.attaches < MAX_ATTACHES:
                self._launch(ssh, tracker.attaches + 1)

    def close_orphans(self) -> None:
        """End the logs of sessions whose ssh is gone with no strace left on it."""
        traced = set(self.trackers)
        try:
            names = os.listdir(self.logs_dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".strace"):
                continue
            path = self.logs_dir / name
            try:
                start = read_start(path)
                if (
                    start is None
                    or start.identity in traced
                    or is_alive(start.identity)
                ):
                    continue
                if not has_ended(path):
                    append_marker(path, "end", reason="ssh ended while not traced")
            except (OSError, SessionLogError):
                continue  # the ingest reports unusable logs

    def stop(self) -> None:
        """Detach every strace: SIGTERM, a deadline, then SIGKILL."""
        for tracker in self.trackers.values():
            _signal(tracker.tracer_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        for tracker in self.trackers.values():
            while tracker.running() and time.monotonic() < deadline:
                time.sleep(0.02)
            if tracker.running():
                _signal(tracker.tracer_pid, signal.SIGKILL)
                if tracker.popen is not None:
                    tracker.popen.wait()
        for identity, tracker in self.trackers.items():
            path = find_log(self.logs_dir, tracker.ssh.tag, identity)
            if path is None:
                continue
            if is_alive(identity):
                append_marker(path, "detach", reason="agent stopped")
            elif not has_ended(path):
                append_marker(path, "end", reason="ssh is gone")
        self.trackers.clear()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)
