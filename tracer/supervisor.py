"""One strace per tagged ssh: started, watched, reaped, stopped, or refused.

Each strace runs through scripts/session_tracker.sh (tracer/tracker.py),
which execs it, so the child we hold is strace itself, in its own session. A
strace left by an agent that died (kill -9) is adopted: it keeps writing its
log. Only our own straces are adopted (tracer/ownership.py).

Work is proportional to what happens, never to sessions x rounds: exits
arrive on pidfds, and only watches with a timer due are looked at
(tracer/watches.py).

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

import contextlib
import logging
import signal
import time
from pathlib import Path

from tracer import Mode
from tracer.discovery import TaggedSsh
from tracer.launcher import Launcher
from tracer.ownership import Owner, ssh_owner
from tracer.procfs import (
    is_alive,
    read_boot_time,
    read_schedstat,
    read_tracer_pid,
    set_nice,
)
from tracer.session_log import end_orphans, find_log, mark_unended, recorded_tty
from tracer.terminals import notify_terminal, served_elsewhere
from tracer.tracker import ALREADY_TRACED, Tracker, adopt, tracker_argv
from tracer.watches import (
    ATTACH_CHECK_FIRST_S,
    Limits,
    SupervisorSnapshot,
    SupervisorStats,
    Watch,
    Watches,
)

__all__ = ["Limits", "Supervisor", "SupervisorSnapshot"]

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 3.0
KILL_GRACE_S = 0.5  # SIGTERM, then SIGKILL: ended within 1 s of the verdict
MAX_ATTACHES = 3  # a strace that keeps dying is not restarted forever
RETRY_AFTER_S = 1.0  # permissive mode: wait before attaching again
MUX_CHECK_AFTER_S = 0.5  # look for a ControlMaster once the session settled
ATTACH_CHECK_MAX_S = 0.05
RECORD_ONLY_WAIT_S = 1.0  # for the start line of a refused session
# A tracker waiting for a CPU is not late: its run-queue time does not count
# against the deadline (/proc/PID/schedstat), up to this many deadlines.
BUSY_DEADLINE_FACTOR = 4.0


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
        self._watches = Watches()
        self.watches = self._watches.by_identity
        self.stats = SupervisorStats()
        self.changes = 0  # tracks and starts (wakeups are counted in stats)
        self._tokens = self.limits.max_new_sessions_per_s
        self._tokens_at = time.monotonic()
        self._boot_time = read_boot_time()
        self._launcher = Launcher()
        self._watches.add_other(self._launcher.fileno())

    def start(self) -> None:
        """Start the launcher threads (unstarted, trackers start inline)."""
        self._launcher.start()

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> SupervisorSnapshot:
        """The straces running now (main thread, like everything here)."""
        return self._watches.snapshot()

    # -- the main loop's side ----------------------------------------------

    def fileno(self) -> int:
        """Readable when a strace or an untraced ssh of a watch has exited."""
        return self._watches.fileno()

    def timeout(self) -> float | None:
        """Seconds until the next timer; None when nothing is due."""
        return self._watches.timeout()

    def service(self) -> None:
        """Handle the exits that arrived and the timers that are due."""
        for watch, fd in self._watches.exited():
            self.stats.wakeups += 1
            self._exited(watch, fd)
        for key, started in self._launcher.take():
            self.changes += 1
            self._started(key, started)
        now = time.monotonic()
        for watch in self._watches.due(now):
            self.stats.wakeups += 1
            self._check(watch, now)

    # -- discovery hands over ---------------------------------------------

    def track(self, ssh: TaggedSsh) -> None:
        """Make sure this tagged ssh is traced, or judged."""
        if ssh.identity in self.watches:
            return
        now = time.monotonic()
        watch = Watch(ssh, found_at=now)
        self._watches.add(watch)
        self.changes += 1
        if ssh.tracer_pid:
            owner = self._owner(ssh, ssh.tracer_pid)
            if owner is not None:
                self._adopt(watch, ssh.tracer_pid, owner, now)
                return
            self._judge(watch, ALREADY_TRACED)
            return
        live = sum(1 for w in self.watches.values() if w.verdict is None)
        if live > self.limits.max_sessions:
            self.stats.limited += 1
            watch.limited = True
            self._judge(watch, f"more than {self.limits.max_sessions} live sessions")
            return
        self._try_launch(watch, now)

    def _owner(self, ssh: TaggedSsh, tracer_pid: int) -> Owner | None:
        return ssh_owner(tracer_pid, self.logs_dir, ssh.tag, ssh.identity)

    def _adopt(self, watch: Watch, tracer_pid: int, owner: Owner, now: float) -> None:
        tracker = adopt(tracer_pid, now)
        if tracker is None:  # gone already: the ssh's exit tells the rest
            self._watches.watch_ssh(watch)
            return
        self._watches.set_tracker(watch, tracker)
        watch.traced_at = now
        watch.verdict = None
        if owner is Owner.SUDO:
            log.info("session %s: traced by its user's session_tracker", watch.ssh.tag)
            watch.sudo = True
        else:
            log.info("session %s: adopted strace %d", watch.ssh.tag, tracer_pid)
            self.stats.adopted += 1
        self._watches.schedule(watch, now + MUX_CHECK_AFTER_S)

    def _take_token(self, now: float) -> bool:
        rate = self.limits.max_new_sessions_per_s
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _try_launch(self, watch: Watch, now: float) -> None:
        if not self._take_token(now):
            # Waits for a token, within its attach deadline.
            rate = self.limits.max_new_sessions_per_s
            self._watches.watch_ssh(watch)
            self._watches.schedule(watch, now + (1.0 - self._tokens) / rate)
            return
        argv = tracker_argv(
            self.script, self.data_dir, watch.ssh, self._boot_time, False
        )
        self._watches.watch_ssh(watch)  # until its tracker runs
        watch.launching = True
        watch.attaches += 1
        self.stats.launched += 1
        self._launcher.submit(watch.ssh.identity, argv)

    def _started(self, key: tuple[int, int], started: Tracker | OSError) -> None:
        """A launcher thread started (or failed to start) a tracker."""
        watch = self.watches.get(key)
        if watch is None or not watch.launching:  # the ssh is gone meanwhile
            if isinstance(started, Tracker):
                started.signal(signal.SIGKILL)
                if started.popen is not None:
                    started.popen.wait()
                started.close()
            return
        watch.launching = False
        if isinstance(started, OSError):
            self._launch_failed(watch, started)
            return
        self._watches.set_tracker(watch, started)
        now = time.monotonic()
        if started.record_only:
            self._watches.schedule(watch, now + RECORD_ONLY_WAIT_S)
            return
        watch.attach_check_s = ATTACH_CHECK_FIRST_S
        self._watches.schedule(watch, now + watch.attach_check_s)

    def _launch_failed(self, watch: Watch, error: OSError) -> None:
        if watch.pending_verdict is not None:
            self._apply_verdict(watch)  # its record-only tracker could not run
        else:
            self._judge(watch, f"cannot run {self.script}: {error.strerror or error}")

    # -- what happens ------------------------------------------------------

    def _exited(self, watch: Watch, fd: int) -> None:
        """A pidfd turned readable: its strace, or its untraced ssh, exited."""
        identity = watch.ssh.identity
        tracker = watch.tracker
        if tracker is None or fd != tracker.pidfd:
            self._watches.drop_ssh_fd(watch)
            if tracker is None or not tracker.running():
                self._finish(identity, watch)
            return
        self._watches.drop_tracker(watch)
        if tracker.record_only:
            self._apply_verdict(watch)
            return
        if not is_alive(identity):
            self._finish(identity, watch)  # strace saw its tracee exit
            return
        if watch.verdict is not None:
            self._watches.watch_ssh(watch)  # a strace of a judged ssh, detached by us
            return
        # Alive and untraced by this tracker: perhaps another of ours holds it
        # (two trackers raced, or a user's sudo one); else a verdict.
        holder = read_tracer_pid(watch.ssh.pid)
        if holder:
            owner = self._owner(watch.ssh, holder)
            if owner is not None:
                self._adopt(watch, holder, owner, time.monotonic())
                return
            self._judge(watch, ALREADY_TRACED)
            return
        self._judge(watch, tracker.exit_reason())

    def _check(self, watch: Watch, now: float) -> None:
        """A timer of this watch is due: see what it waits for."""
        identity = watch.ssh.identity
        if watch.launching:
            return  # its tracker is being started; that says what comes next
        if not is_alive(identity):
            if watch.tracker is None or not watch.tracker.running():
                self._finish(identity, watch)
            return
        if watch.kill_at is not None:
            if now >= watch.kill_at:
                self._signal_ssh(watch, signal.SIGKILL)
            else:
                self._watches.schedule(watch, watch.kill_at)
            return
        if watch.verdict is not None or watch.pending_verdict is not None:
            self._retry(watch, now)
            return
        tracker = watch.tracker
        if tracker is None:
            if now - watch.found_at > self.limits.attach_deadline_s:
                self.stats.limited += 1
                watch.limited = True
                self._judge(watch, "too many new sessions at once")
            else:
                self._try_launch(watch, now)
            return
        if watch.traced_at is None:
            self._check_attach(watch, tracker, now)
            return
        if not watch.mux_checked and now - watch.traced_at < MUX_CHECK_AFTER_S:
            self._watches.schedule(watch, watch.traced_at + MUX_CHECK_AFTER_S)
        elif not watch.mux_checked:
            watch.mux_checked = True
            master = served_elsewhere(watch.ssh.pid, watch.ssh.uid)
            if master is not None:
                self._judge(
                    watch,
                    f"its terminal is served by ssh {master} (ControlMaster), "
                    "which is not traced for it",
                )

    def _check_attach(self, watch: Watch, tracker: Tracker, now: float) -> None:
        if read_tracer_pid(watch.ssh.pid) == tracker.tracer_pid:
            watch.traced_at = now
            set_nice(tracker.tracer_pid, 0)  # attached: no longer urgent
            self.stats.attach_latencies_s.append(now - watch.found_at)
            self._watches.schedule(watch, now + MUX_CHECK_AFTER_S)
            return
        deadline = self.limits.attach_deadline_s
        waited = now - tracker.launched_at
        if waited > deadline:
            sched = read_schedstat(tracker.tracer_pid)
            queued = sched[1] / 1e9 if sched is not None else 0.0
            if waited - queued > deadline or waited > deadline * BUSY_DEADLINE_FACTOR:
                self._judge(watch, "strace did not attach in time")
                return
        watch.attach_check_s = min(ATTACH_CHECK_MAX_S, watch.attach_check_s * 2)
        self._watches.schedule(watch, now + watch.attach_check_s)

    def cut(self, identity: tuple[int, int], message: str) -> bool:
        """End a traced ssh as strict mode does, `message` on its terminal first.

        For an auditor's terminate (agent/daemon/cuts.py), which gives the
        session's end reason. False: no such ssh is watched or alive.
        """
        watch = self.watches.get(identity)
        if watch is None or not is_alive(identity):
            return False
        path = find_log(self.logs_dir, watch.ssh.tag, identity)
        notify_terminal(watch.ssh.pid, message, recorded_tty(path))
        self._signal_ssh(watch, signal.SIGTERM)
        watch.kill_at = time.monotonic() + KILL_GRACE_S
        self._watches.schedule(watch, watch.kill_at)
        return True

    def _judge(self, watch: Watch, reason: str) -> None:
        """This ssh is not audited: end it (strict) or mark the gap (permissive)."""
        tracker = watch.tracker
        if tracker is not None and tracker.running() and tracker.popen is not None:
            # Our strace, alive but useless here (a multiplexed terminal):
            # detach it so that the log can be marked.
            tracker.signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                tracker.popen.wait(1.0)
        if tracker is not None and not tracker.running():
            self._watches.drop_tracker(watch)
        if watch.tracker is None and watch.attaches == 0 and self._record_only(watch):
            # Refused before any tracker ran: a log with its start line puts
            # the session on record first; the verdict follows as its end.
            watch.pending_verdict = reason
            return
        watch.pending_verdict = reason
        self._apply_verdict(watch)

    def _record_only(self, watch: Watch) -> bool:
        now = time.monotonic()
        if find_log(self.logs_dir, watch.ssh.tag, watch.ssh.identity) is not None:
            return False
        if not self._take_token(now):
            return False
        argv = tracker_argv(
            self.script, self.data_dir, watch.ssh, self._boot_time, True
        )
        watch.launching = True
        self._launcher.submit(watch.ssh.identity, argv, record_only=True)
        return True

    def _apply_verdict(self, watch: Watch) -> None:
        ssh = watch.ssh
        reason = watch.pending_verdict or "no reason given"
        watch.pending_verdict = None
        if watch.tracker is not None and watch.tracker.record_only:
            self._watches.drop_tracker(
                watch
            )  # its second to write the start line is up
        first = watch.verdict is None
        watch.verdict = reason
        path = find_log(self.logs_dir, ssh.tag, ssh.identity)
        if self.strict(watch.ssh):
            self.stats.terminated += 1
            log.error(
                "session %s: %s; ending ssh %d (strict mode)", ssh.tag, reason, ssh.pid
            )
            tty = recorded_tty(path)
            notify_terminal(
                ssh.pid,
                f"bastion-audit: this session cannot be audited "
                f"({reason}); closing it.",
                tty,
            )
            self._signal_ssh(watch, signal.SIGTERM)
            watch.kill_at = time.monotonic() + KILL_GRACE_S
            self._watches.schedule(watch, watch.kill_at)
            return
        if first:
            self.stats.untraced += 1
            log.error(
                "session %s: %s; it goes on untraced (permissive mode)", ssh.tag, reason
            )
        tracker = watch.tracker
        if path is not None and not (tracker and tracker.running()):
            mark_unended(path, "detach", reason=reason)
        if tracker is None:
            self._watches.watch_ssh(watch)
        watch.next_attempt = time.monotonic() + RETRY_AFTER_S
        self._watches.schedule(watch, watch.next_attempt)

    def strict(self, ssh: TaggedSsh) -> bool:
        """Whether the mode ends it; an untagged ssh traced under our tag, never."""
        return self.mode == Mode.STRICT and not ssh.generated

    def _signal_ssh(self, watch: Watch, sig: signal.Signals) -> None:
        """`sig` to the ssh through its pidfd: never to a process reusing its pid."""
        self._watches.watch_ssh(watch)
        if watch.ssh_pidfd >= 0 and is_alive(watch.ssh.identity):
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                signal.pidfd_send_signal(watch.ssh_pidfd, sig)

    def _retry(self, watch: Watch, now: float) -> None:
        """Permissive mode: attach again, a few times, when the cause may pass."""
        if watch.pending_verdict is not None:
            self._apply_verdict(watch)  # its record-only tracker took too long
            return
        if self.strict(watch.ssh):
            return
        if now < watch.next_attempt:
            self._watches.schedule(watch, watch.next_attempt)
            return
        if watch.attaches >= MAX_ATTACHES or watch.limited:
            return
        tracker = watch.tracker
        if tracker is not None and tracker.running():
            if read_tracer_pid(watch.ssh.pid) == tracker.tracer_pid:
                watch.verdict = None  # attached again: the gap closes
                watch.traced_at = now
                set_nice(tracker.tracer_pid, 0)
                log.info("session %s: traced again", watch.ssh.tag)
                self._watches.schedule(watch, now + MUX_CHECK_AFTER_S)
            else:
                self._watches.schedule(watch, now + RETRY_AFTER_S)
            return
        self._try_launch(watch, now)
        watch.next_attempt = now + RETRY_AFTER_S
        self._watches.schedule(watch, watch.next_attempt)

    def _finish(self, identity: tuple[int, int], watch: Watch) -> None:
        """The ssh is gone and no strace is left on it: make sure its log ends."""
        self._watches.remove(watch)
        if watch.sudo:
            return  # its own session_tracker wrote the log; strace ended it
        path = find_log(self.logs_dir, watch.ssh.tag, identity)
        if path is None:
            return
        if watch.verdict is not None and self.strict(watch.ssh):
            mark_unended(
                path, "end", reason=f"terminated: {watch.verdict}", status="terminated"
            )
        else:
            mark_unended(path, "end", reason="ssh is gone")

    def close_orphans(self) -> None:
        """End the logs of sessions whose ssh is gone with no strace left on it."""
        end_orphans(self.logs_dir, set(self.watches))

    def stop(self) -> None:
        """Detach every strace: SIGTERM, a deadline, then SIGKILL."""
        self._launcher.stop()
        for key, started in self._launcher.take():
            self._started(key, started)
        self._launcher.close()
        trackers = [
            w.tracker
            for w in self.watches.values()
            if w.tracker is not None and not w.sudo
        ]
        for tracker in trackers:
            tracker.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        for tracker in trackers:
            while tracker.running() and time.monotonic() < deadline:
                time.sleep(0.02)
            if tracker.running():
                tracker.signal(signal.SIGKILL)
                if tracker.popen is not None:
                    tracker.popen.wait()
        for identity, watch in list(self.watches.items()):
            had_tracker = watch.tracker is not None
            self._watches.remove(watch)
            if watch.sudo or not had_tracker:
                continue
            path = find_log(self.logs_dir, watch.ssh.tag, identity)
            if path is None:
                continue
            if is_alive(identity):
                mark_unended(path, "detach", reason="agent stopped")
            else:
                mark_unended(path, "end", reason="ssh is gone")
        self._watches.close()
