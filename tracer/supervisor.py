"""One strace per tagged ssh: started, watched, reaped, stopped, or refused.

Each strace runs through scripts/session_tracker.sh, which execs it, so the
child we hold is strace itself: in its own session (a Ctrl-C on the agent's
terminal or a signal to its process group does not reach it), with a fixed
PATH and LC_ALL=C. A strace left by an agent that died (kill -9) is adopted:
it keeps writing its log and is watched by pid.

A tagged ssh that cannot be traced (strace missing or refused by ptrace, the
ssh already traced by another tracer, no terminal, a strace that dies, a
limit reached, a ControlMaster serving its terminal, no attach within the
deadline) gets a verdict. In strict mode (the default) the ssh is ended:
a one-line notice on its terminal, SIGTERM, SIGKILL half a second later, and
an `end` line in its log with status `terminated` and the reason. In
permissive mode it goes on untraced; its log gets a `detach` line, so the
session shows the gap.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tracer import Mode
from tracer.discovery import TaggedSsh, is_alive, read_tracer_pid
from tracer.session_log import (
    SessionLogError,
    find_log,
    mark_unended,
    read_start,
)
from tracer.terminals import notify_terminal, served_elsewhere

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 3.0
KILL_GRACE_S = 0.5  # SIGTERM, then SIGKILL: ended within 1 s of the verdict
MAX_ATTACHES = 3  # a strace that keeps dying is not restarted forever
RETRY_AFTER_S = 1.0  # permissive mode: wait before attaching again
MUX_CHECK_AFTER_S = 0.5  # look for a ControlMaster once the session settled
LATENCY_SAMPLES = 1000
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

# session_tracker.sh exit codes (see its header), as reasons.
TRACKER_EXITS = {
    2: "session_tracker.sh refused its arguments",
    3: "ssh has no terminal on stdin or stdout",
    4: "ssh is already traced by another tracer",
    5: "cannot write the session log",
    6: "strace is not installed",
}


@dataclass(frozen=True)
class Limits:
    """Bounds on what a flood of tagged ssh processes can make the agent do."""

    attach_deadline_s: float = 5.0
    max_sessions: int = 1000
    max_new_sessions_per_s: float = 50.0


@dataclass
class Tracker:
    popen: subprocess.Popen[bytes] | None  # None: adopted, watched by pid
    tracer_pid: int

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            return bool(
                psutil.Process(self.tracer_pid).status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def exit_reason(self) -> str:
        if self.popen is None or self.popen.returncode is None:
            return f"strace {self.tracer_pid} is gone"
        rc = self.popen.returncode
        if rc < 0 or rc > 128:  # strace exits 128 + n on a fatal signal n
            return f"strace was killed by {signal.Signals(abs(rc) % 128).name}"
        if rc in TRACKER_EXITS:
            return TRACKER_EXITS[rc]
        if rc == 1:
            return "strace could not attach (ptrace refused)"
        if rc in (126, 127):
            return "strace is not installed or cannot run"
        return f"strace exited {rc}"


@dataclass
class Watch:
    """One tagged ssh under supervision."""

    ssh: TaggedSsh
    found_at: float  # monotonic
    tracker: Tracker | None = None
    attaches: int = 0
    traced_at: float | None = None
    next_attempt: float = 0.0
    mux_checked: bool = False
    verdict: str | None = None  # why it is not audited
    kill_at: float | None = None  # strict: SIGKILL if still alive by then
    sudo: bool = False  # traced by its user's own session_tracker under sudo


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
    attach_latencies_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )


class Supervisor:
    """Owns every strace the agent starts or adopts, and every verdict."""

    def __init__(
        self,
        script: Path,
        data_dir: Path,
        mode: Mode = Mode.STRICT,
        limits: Limits | None = None,
    ) -> None:
        self.script = script
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.mode = mode
        self.limits = limits or Limits()
        self.watches: dict[tuple[int, int], Watch] = {}
        self.stats = SupervisorStats()
        self._tokens = self.limits.max_new_sessions_per_s
        self._tokens_at = time.monotonic()

    def snapshot(self) -> SupervisorSnapshot:
        """The straces running now (main thread, like everything here)."""
        return SupervisorSnapshot(
            tuple(
                StraceRunning(
                    w.tracker.tracer_pid, w.ssh.tag, w.ssh.pid, w.tracker.popen is None
                )
                for w in self.watches.values()
                if w.tracker is not None and w.tracker.running()
            )
        )

    @property
    def tracer_pids(self) -> list[int]:
        return [
            w.tracker.tracer_pid
            for w in self.watches.values()
            if w.tracker is not None and w.tracker.running()
        ]

    # -- discovery hands over ---------------------------------------------

    def track(self, ssh: TaggedSsh) -> None:
        """Make sure this tagged ssh is traced, or judged."""
        if ssh.identity in self.watches:
            return
        now = time.monotonic()
        watch = Watch(ssh, found_at=now)
        self.watches[ssh.identity] = watch
        if ssh.tracer_pid:
            owner = self._strace_owner(ssh.tracer_pid)
            if owner == "agent":
                log.info("session %s: adopted strace %d", ssh.tag, ssh.tracer_pid)
                watch.tracker = Tracker(None, ssh.tracer_pid)
                watch.traced_at = now
                self.stats.adopted += 1
                return
            if owner == "sudo":
                log.info("session %s: traced by its user's session_tracker", ssh.tag)
                watch.tracker = Tracker(None, ssh.tracer_pid)
                watch.traced_at = now
                watch.sudo = True
                return
            # Traced by something else: the tracker still writes the log's
            # start line, then refuses; the verdict follows from its exit.
        live = sum(1 for w in self.watches.values() if w.verdict is None)
        if live > self.limits.max_sessions:
            self.stats.limited += 1
            self._judge(watch, f"more than {self.limits.max_sessions} live sessions")
            return
        self._try_launch(watch, now)

    def _take_token(self, now: float) -> bool:
        rate = self.limits.max_new_sessions_per_s
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _run_tracker(self, ssh: TaggedSsh, *flags: str) -> subprocess.Popen[bytes]:
        argv = [
            str(self.script),
            "--data-dir",
            str(self.data_dir),
            "--pid",
            str(ssh.pid),
            *flags,
            ssh.tag,
        ]
        return subprocess.Popen(
            argv,
            env=CHILD_ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _try_launch(self, watch: Watch, now: float) -> None:
        if not self._take_token(now):
            return  # waits for a token, within its attach deadline
        try:
            popen = self._run_tracker(watch.ssh)
        except OSError as e:
            self._judge(watch, f"cannot run {self.script}: {e.strerror}")
            return
        watch.tracker = Tracker(popen, popen.pid)
        watch.attaches += 1
        self.stats.launched += 1

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

    # -- every round ------------------------------------------------------

    def supervise(self) -> None:
        """Check every watch: attached, lost, late, served elsewhere, gone."""
        now = time.monotonic()
        for identity, watch in list(self.watches.items()):
            if not is_alive(identity):
                if watch.tracker is None or not watch.tracker.running():
                    self._finish(identity, watch)
                continue
            if watch.kill_at is not None:
                if now >= watch.kill_at:
                    _signal(watch.ssh.pid, signal.SIGKILL)
                continue
            if watch.verdict is not None:
                self._retry(watch, now)
                continue
            tracker = watch.tracker
            if tracker is None:
                if now - watch.found_at > self.limits.attach_deadline_s:
                    self.stats.limited += 1
                    self._judge(watch, "too many new sessions at once")
                else:
                    self._try_launch(watch, now)
                continue
            if not tracker.running():
                # strace exits 0 when ssh exits: a race with is_alive above.
                if is_alive(identity):
                    self._judge(watch, tracker.exit_reason())
                continue
            if watch.traced_at is None:
                if read_tracer_pid(watch.ssh.pid) == tracker.tracer_pid:
                    watch.traced_at = now
                    self.stats.attach_latencies_s.append(now - watch.found_at)
                elif now - watch.found_at > self.limits.attach_deadline_s:
                    self._judge(watch, "strace did not attach in time")
                continue
            if not watch.mux_checked and now - watch.traced_at > MUX_CHECK_AFTER_S:
                watch.mux_checked = True
                master = served_elsewhere(watch.ssh)
                if master is not None:
                    self._judge(
                        watch,
                        f"its terminal is served by ssh {master} (ControlMaster), "
                        "which is not traced for it",
                    )

    def cut(self, identity: tuple[int, int], message: str) -> bool:
        """End a traced ssh as strict mode does, `message` on its terminal first.

        For an auditor's terminate (agent/daemon/cuts.py), which gives the
        session's end reason. False: no such ssh is watched or alive.
        """
        watch = self.watches.get(identity)
        if watch is None or not is_alive(identity):
            return False
        notify_terminal(watch.ssh.pid, message)
        _signal(watch.ssh.pid, signal.SIGTERM)
        watch.kill_at = time.monotonic() + KILL_GRACE_S
        return True

    def _judge(self, watch: Watch, reason: str) -> None:
        """This ssh is not audited: end it (strict) or mark the gap (permissive)."""
        ssh = watch.ssh
        first = watch.verdict is None
        watch.verdict = reason
        tracker = watch.tracker
        if tracker is None and self._take_token(time.monotonic()):
            # Refused before any tracker ran (a limit): a log with its start
            # line puts the session on record; the verdict follows as its end.
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                record = self._run_tracker(ssh, "--record-only")
                record.wait(1.0)  # before the ssh is ended: it reads /proc/PID
        if tracker is not None and tracker.running() and tracker.popen is not None:
            # Our strace, alive but useless here (a multiplexed terminal):
            # detach it so that the log can be marked.
            _signal(tracker.tracer_pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                tracker.popen.wait(1.0)
        if self.mode == Mode.STRICT:
            self.stats.terminated += 1
            log.error(
                "session %s: %s; ending ssh %d (strict mode)", ssh.tag, reason, ssh.pid
            )
            notify_terminal(
                ssh.pid,
                f"bastion-audit: this session cannot be audited "
                f"({reason}); closing it.",
            )
            _signal(ssh.pid, signal.SIGTERM)
            watch.kill_at = time.monotonic() + KILL_GRACE_S
            return
        if first:
            self.stats.untraced += 1
            log.error(
                "session %s: %s; it goes on untraced (permissive mode)", ssh.tag, reason
            )
        path = find_log(self.logs_dir, ssh.tag, ssh.identity)
        if path is not None and not (tracker and tracker.running()):
            mark_unended(path, "detach", reason=reason)
        watch.next_attempt = time.monotonic() + RETRY_AFTER_S

    def _retry(self, watch: Watch, now: float) -> None:
        """Permissive mode: attach again, a few times, when the cause may pass."""
        if self.mode == Mode.STRICT or now < watch.next_attempt:
            return
        if watch.attaches >= MAX_ATTACHES or watch.tracker is None:
            return
        if watch.tracker.running():
            if read_tracer_pid(watch.ssh.pid) == watch.tracker.tracer_pid:
                watch.verdict = None  # attached again: the gap closes
                watch.traced_at = now
                log.info("session %s: traced again", watch.ssh.tag)
            return
        self._try_launch(watch, now)
        watch.next_attempt = now + RETRY_AFTER_S

    def _finish(self, identity: tuple[int, int], watch: Watch) -> None:
        """The ssh is gone and no strace is left on it: make sure its log ends."""
        del self.watches[identity]
        if watch.sudo:
            return  # its own session_tracker wrote the log; strace ended it
        path = find_log(self.logs_dir, watch.ssh.tag, identity)
        if path is None:
            return
        if watch.verdict is not None and self.mode == Mode.STRICT:
            mark_unended(
                path, "end", reason=f"terminated: {watch.verdict}", status="terminated"
            )
        else:
            mark_unended(path, "end", reason="ssh is gone")

    def close_orphans(self) -> None:
        """End the logs of sessions whose ssh is gone with no strace left on it."""
        watched = set(self.watches)
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
                    or start.identity in watched
                    or is_alive(start.identity)
                ):
                    continue
                mark_unended(path, "end", reason="ssh ended while not traced")
            except (OSError, SessionLogError):
                continue  # the ingest reports unusable logs

    def stop(self) -> None:
        """Detach every strace: SIGTERM, a deadline, then SIGKILL."""
        trackers = [
            w.tracker
            for w in self.watches.values()
            if w.tracker is not None and not w.sudo
        ]
        for tracker in trackers:
            _signal(tracker.tracer_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        for tracker in trackers:
            while tracker.running() and time.monotonic() < deadline:
                time.sleep(0.02)
            if tracker.running():
                _signal(tracker.tracer_pid, signal.SIGKILL)
                if tracker.popen is not None:
                    tracker.popen.wait()
        for identity, watch in self.watches.items():
            if watch.sudo or watch.tracker is None:
                continue
            path = find_log(self.logs_dir, watch.ssh.tag, identity)
            if path is None:
                continue
            if is_alive(identity):
                mark_unended(path, "detach", reason="agent stopped")
            else:
                mark_unended(path, "end", reason="ssh is gone")
        self.watches.clear()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)
