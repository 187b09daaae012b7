"""Session logs to stored commands, live.

inotify reports changed logs in DATA_DIR/logs (agent/daemon/log_watch.py:
only a log that grew, appeared or went, never the ingest's own reads); one
ingest thread reads each growing log from where it stopped, through the
strace decoder and the command builder, and hands the session's new state
and commands to the store. Any log counts, whoever started its strace (the
agent, or a user through sudo). A round starts SETTLE_S after a wake-up and
ROUND_S after the last: with many sessions typing, one round reads them all
and flushes their commands (agent/daemon/flush_pacer.py: why).

What one user's files in the recordings spool may cost is bounded
(agent/daemon/spool_guard.py); a strace log past `log_max_bytes` is handed to
the main loop for the mode's verdict; what the store holds durably of a live
log is given back to the disk (agent/daemon/reclaim.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.daemon.enforcer import Enforcer, Taken
from agent.daemon.follower import LogFollower
from agent.daemon.intents import IntentLinker
from agent.daemon.log_expiry import LogExpiry
from agent.daemon.log_watch import LogWatch
from agent.daemon.new_session import new_session
from agent.daemon.quarantine import keep
from agent.daemon.reclaim import Reclaimer
from agent.daemon.recorder import Recorder
from agent.daemon.spool import STRACE_SUFFIX, SpoolError, decoder_for, spool_usable
from agent.daemon.spool_guard import RecordingGate, UidBudget
from agent.daemon.spool_intake import SpoolIntake
from agent.daemon.store import Store
from agent.daemon.verdicts import LogBudget
from agent.records import ENDED, NOT_TRACED, Session, iso
from parsers.chunk_log import SUFFIX as CHUNK_SUFFIX
from parsers.pipeline import CommandPipeline
from tracer.discovery import is_alive
from tracer.session_log import SessionLogError, SessionStart, read_start
from tracer.tags import parse_ssh_argv
from tracer.wake import WakePipe

log = logging.getLogger(__name__)

LOG_SUFFIX = STRACE_SUFFIX
RESCAN_INTERVAL_S = 1.0  # intents; spooled writers gone; the spool's gate
REREAD_INTERVAL_S = 10.0  # every log looked for and read again: a net under inotify
SETTLE_S = 0.005  # a command's echo, output and prompt: written within about 2 ms
ROUND_S = 0.05  # 20 sessions typing: 7 % of a core; 9 % with a round each 10 ms
INGEST_NICE = 10  # parsing yields the CPU to the sessions it audits
RECORDINGS_PER_UID = 256  # recordings of one uid followed (or incomplete) at once
RECORDINGS_PER_UID_S = 5.0  # new recordings of one uid followed per second


@dataclass(frozen=True, slots=True)
class IngestSnapshot:
    """What `audit-agent status` shows of the ingest."""

    logs: int  # session logs being followed
    lag_bytes: dict[str, int]  # per session id: log bytes not ingested yet


class Ingest:
    """Owns the inotify watch and the ingest thread."""

    def __init__(
        self,
        logs_dir: Path,
        store: Store,
        retention_s: float = 0.0,
        recorder: Recorder | None = None,
        intents: IntentLinker | None = None,
        recordings_dir: Path | None = None,
        enforcer: Enforcer | None = None,
        recordings_budget: UidBudget | None = None,
        log_max_bytes: int = 0,
    ) -> None:
        self.logs_dir = logs_dir
        self.enforcer = enforcer  # the command rules, when any acts
        # audit-shell's paramiko recordings (agent/daemon/spool.py), read in place;
        # what one uid's files may cost is bounded (agent/daemon/spool_guard.py).
        self.recordings_dir = recordings_dir
        self.quarantine_dir = logs_dir.parent / "quarantine"
        budget = recordings_budget or UidBudget(
            "recordings", RECORDINGS_PER_UID_S, RECORDINGS_PER_UID
        )
        self.gate = (
            RecordingGate(recordings_dir, CHUNK_SUFFIX, budget)
            if recordings_dir is not None
            else None
        )
        self.intake = SpoolIntake(self.gate, self.quarantine_dir) if self.gate else None
        # A strace log past this gets the mode's verdict, from the main loop.
        self.log_budget = LogBudget(log_max_bytes)
        # What the store holds durably is given back to the disk (live logs).
        self.reclaimer = Reclaimer()
        self.store = store
        self.expiry = LogExpiry(retention_s)  # closed sessions' logs, kept a while
        self.intents = intents  # audit-shell's connection records, if collected
        self.recorder = recorder  # the followers feed it every event
        self.followers: dict[Path, LogFollower] = {}
        # Bumped whenever a log was read on or let go: the status is rebuilt
        # when it moved (agent/daemon/agent.py), not for idle sessions.
        self.progress = 0
        self._ignored: set[Path] = set()  # logs already reported as unusable
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = WakePipe()
        self._stop = threading.Event()
        self._watch: LogWatch | None = None
        self._thread: threading.Thread | None = None
        # Sessions an auditor terminated: identity -> their end reason.
        self._cuts: dict[tuple[int, int], str] = {}
        # Actions whose outcome came later (an alert): for the ingest thread.
        self._taken: queue.SimpleQueue[tuple[tuple[int, int], Taken]] = (
            queue.SimpleQueue()
        )

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.logs_dir, 0o700)
        if self.intents is not None:
            self.intents.open()
        watch = LogWatch()
        watch.add(self.logs_dir)
        if self.recordings_dir is not None and spool_usable(self.recordings_dir):
            # Without it (made later, or never): the rescan each second finds them.
            watch.add(self.recordings_dir)
        self._watch = watch
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then read every log to its current end once more."""
        self._stop.set()
        self._wake_up()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._take_intents()
        self.scan()
        self.process_all(final=True)
        self._store_taken()

    def __enter__(self) -> Ingest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> IngestSnapshot:
        """Followed logs and how far behind each is (any thread).

        The followers are copied whole first; an offset read while the ingest
        thread moves it is at worst one read old.
        """
        lag: dict[str, int] = {}
        logs = 0
        for follower in list(self.followers.values()):
            if follower.finished:
                continue
            logs += 1
            try:
                size = os.stat(follower.path).st_size
            except OSError:
                size = 0
            behind = max(0, size - follower.decoder.offset)
            lag[follower.session.id] = lag.get(follower.session.id, 0) + behind
        return IngestSnapshot(logs=logs, lag_bytes=lag)

    def wake(self, path: Path | None = None) -> None:
        """Look at `path` (or just look around) soon; any thread."""
        if path is not None:
            with self._dirty_lock:
                self._dirty.add(path)
        self._wake_up()

    def _wake_up(self) -> None:
        self._wake.wake()

    def cut(self, identity: tuple[int, int], reason: str | None) -> None:
        """This session was terminated (any thread): its end gets `reason`.

        None takes it back (the cut could not be done after all).
        """
        if reason is None:
            self._cuts.pop(identity, None)
        else:
            self._cuts[identity] = reason
        self._wake_up()

    def taken(self, identity: tuple[int, int], taken: Taken) -> None:
        """An action carried out later (any thread): a record for its session."""
        self._taken.put((identity, taken))
        self._wake_up()

    def _store_taken(self) -> None:
        """Ingest thread: the records of actions done since the last round."""
        while True:
            try:
                identity, taken = self._taken.get_nowait()
            except queue.Empty:
                return
            follower = next(
                (f for f in self.followers.values() if f.session.identity == identity),
                None,
            )
            if follower is not None:
                follower.add_taken(taken)
                self._submit(follower)
                continue
            # Its log is gone: no one counts. The action was on the traced
            # ssh, so a strace log's session, not a recording that named it.
            claims = self.store.processes.claims(identity)
            claims.sort(key=lambda s: s.recorder == "strace", reverse=True)
            session = claims[0] if claims else None
            if session is not None:
                session = session.counted()
                record = taken.record(
                    session.id, session.command_count, iso(time.time())
                )
                self.store.submit(session, [record])

    def on_flushed(self, sessions: list[Session]) -> None:
        """Store callback (the flushing thread): these states are now durable."""
        for session in sessions:
            if session.status in ENDED:
                self.expiry.closed(session)
            elif session.checkpoint is not None and session.log.endswith(LOG_SUFFIX):
                self.reclaimer.durable(
                    self.logs_dir / session.log, session.checkpoint.offset
                )
        if self.intents is not None:
            self.intents.flushed(sessions)
        # No wake-up: the next round (RESCAN_INTERVAL_S at most) does the rest.

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        # Parsing can wait for the sessions it audits: the CPU goes first to ssh
        # and its strace (ssh waits for it at every syscall). Linux lets a
        # thread have its own nice value.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICE)
        assert self._watch is not None
        poller = select.poll()
        poller.register(self._watch.fileno(), select.POLLIN)
        poller.register(self._wake.fileno(), select.POLLIN)
        last_scan = last_reread = last_round = 0.0
        while not self._stop.is_set():
            due = last_scan + RESCAN_INTERVAL_S  # a scan, or the commands held first
            due = min(due, self.store.batch_due() or due)
            if poller.poll(max(0.0, due - time.monotonic()) * 1000):
                self._stop.wait(max(SETTLE_S, last_round + ROUND_S - time.monotonic()))
            now = last_round = time.monotonic()
            try:
                with self.store.batch():  # flushed at its end, by this thread
                    self._store_taken()
                    self._wake.drain()
                    changed, lost = self._watch.read()
                    if lost:
                        last_scan = last_reread = 0.0  # inotify overflowed: read all
                    with self._dirty_lock:
                        dirty, self._dirty = self._dirty | changed, set()
                    for path in sorted(dirty):
                        if path in self.followers or path.parent == self.logs_dir:
                            self.process(path)
                        elif self.intake is not None:
                            self.intake.arrive(path, self.followers)  # in turn
                    if now - last_scan >= RESCAN_INTERVAL_S:
                        last_scan = now
                        self._take_intents()
                        if now - last_reread >= REREAD_INTERVAL_S:
                            last_reread = now
                            self.scan()
                            self.process_all()
                        else:
                            self.scan(logs=False)
                            self._check_recorders()
                    self._look_at_arrivals()  # after the logs being followed
                    self._delete_ingested()
                    self.reclaimer.run()
                    if self.intents is not None:
                        self.intents.remove_durable()
            except Exception:  # the daemon boundary for this thread
                log.exception("ingest round failed; retrying")
                self._stop.wait(RESCAN_INTERVAL_S)

    def scan(self, logs: bool = True) -> None:
        """Notice logs that appeared without an event (startup, missed inotify).

        `logs=False`: only the paramiko spool. Its gate lists it only when it
        changed, and also lets in what waited its uid's turn and removes
        what stayed incomplete: each second, watched by inotify or not. Its
        files join the intake's queue (SpoolIntake), to be looked at in turn.
        """
        if logs:
            known = {str(path) for path in self.followers}
            try:
                names = os.listdir(self.logs_dir)
            except OSError:
                names = []
            for name in names:
                if name.endswith(LOG_SUFFIX) and f"{self.logs_dir}/{name}" not in known:
                    self.process(self.logs_dir / name)
        spool, intake = self.recordings_dir, self.intake
        if intake is not None and spool is not None and spool_usable(spool):
            for path in intake.gate.arrivals():  # new, changed, or let in at last
                intake.arrive(path, self.followers)

    def _look_at_arrivals(self) -> None:
        if self.intake is not None:
            for path in self.intake.take():
                self.process(path)
            if self.intake.waiting:
                self._wake_up()  # more next round, at once

    def _take_intents(self) -> None:
        if self.intents is not None:
            self.intents.poll()

    def process_all(self, final: bool = False) -> None:
        for path in list(self.followers):
            self.process(path, final=final)
            follower = self.followers.get(path)
            if follower is not None and follower.spooled and not follower.finished:
                self._check_recorder(follower)

    def _check_recorders(self) -> None:
        """Spooled recordings only: their writer may be gone without a word."""
        for path, follower in list(self.followers.items()):
            if follower.spooled and not follower.finished:
                self.process(path)
                self._check_recorder(follower)

    def _check_recorder(self, follower: LogFollower) -> None:
        """A paramiko recording whose writer is gone without an end line."""
        if is_alive(follower.session.identity):
            return
        follower.recorder_gone()
        self._submit(follower)

    # -- one log ---------------------------------------------------------

    def process(self, path: Path, final: bool = False) -> None:
        follower = self.followers.get(path)
        if follower is None:
            if path in self._ignored or not self._is_log(path):
                return
            follower = self._new_follower(path)
            if follower is None:
                return
            self.followers[path] = follower
        if follower.finished:
            return
        follower.cut_reason = self._cuts.get(follower.session.identity)
        offset = follower.decoder.offset
        if follower.read(final):
            self.wake(follower.path)  # more than a round's budget: come back soon
        if follower.decoder.offset != offset or follower.finished:
            self.progress += 1
        self._submit(follower)
        if follower.finished and follower.spooled and self.gate is not None:
            self.gate.done(path)  # its uid may start another
        if not follower.spooled and not follower.finished:
            session = follower.session
            self.log_budget.check(path, session.id, session.identity, follower.size)

    def _new_follower(self, path: Path) -> LogFollower | None:
        """A follower for a log seen for the first time; None: not (yet)."""
        if path.parent != self.logs_dir:
            assert self.intake is not None
            return self.intake.new_follower(path, self._open, self._proven)
        try:
            start = read_start(path)
            return self._open(path, start) if start is not None else None
        except FileNotFoundError:
            return None
        except SessionLogError as e:
            self._ignored.add(path)
            where = keep(path, self.quarantine_dir, move=True)
            log.error("%s; moved it to %s, left out of the store", e, where)
            return None

    def _is_log(self, path: Path) -> bool:
        if path.parent == self.logs_dir:
            return path.name.endswith(LOG_SUFFIX)
        return path.parent == self.recordings_dir and path.name.endswith(CHUNK_SUFFIX)

    def _log_path(self, name: str) -> Path:
        """Where a session's log lives, by its suffix (Session.log is a name)."""
        if name.endswith(CHUNK_SUFFIX) and self.recordings_dir is not None:
            return self.recordings_dir / name
        return self.logs_dir / name

    def _open(self, path: Path, start: SessionStart) -> LogFollower:
        inode = os.stat(path, follow_symlinks=False).st_ino
        spooled = path.parent != self.logs_dir
        session = self.store.processes.find(start.identity, path.name)
        if session is None:
            for other in self.store.processes.claims(start.identity):
                if other.status in NOT_TRACED and not spooled:
                    continue  # it was untagged until it exec'd a tagged ssh
                if spooled:
                    # A user's file never joins a session another log feeds.
                    raise SpoolError(
                        f"recording {path} claims session {other.id} of {other.log}"
                    )
                # A root-written log never joins another log's session (ended
                # or not), and wins over a recording that claimed its process.
                self._supersede(other, path)
            self._take_intents()  # a connection record goes first
            session = new_session(self.store, self.intents, start, path.name)
        follower = LogFollower(
            path=path,
            session=session,
            decoder=decoder_for(path.name, start.tty),
            pipeline=CommandPipeline(session.checkpoint),
            quarantine_dir=self.quarantine_dir,
            recorder=self.recorder,
            enforcer=self.enforcer,
            inode=inode,
            spooled=spooled,
            owner_uid=start.uid if spooled else None,
            # Without a remote pty (`ssh host cmd`) keys go to the command,
            # not to a shell: only the log's lifecycle lines matter.
            interactive=parse_ssh_argv(start.argv, start.ssh_version).remote_tty,
        )
        if session.status in ENDED:
            follower.finished = True
            self.expiry.closed(session)  # ingested before; only the file is left
        elif session.checkpoint is not None:
            follower.decoder.offset = session.checkpoint.offset
        return follower

    def _proven(self, start: SessionStart, proof: str) -> bool:
        """Whether audit-shell's connection record vouches for this recording."""
        if self.intents is None or not proof:
            return False
        self._take_intents()  # written before the recording: read it first
        return self.intents.proven(start, proof)

    def _supersede(self, other: Session, path: Path) -> None:
        """A strace log for a process that `other`, from another log, names."""
        log.warning(
            "session %s (%s) names the process of the log %s: it gets a new one",
            other.id,
            other.log,
            path.name,
        )
        follower = self.followers.get(self._log_path(other.log))
        if other.status in ENDED or follower is None or not follower.spooled:
            return
        # A recording cannot be of a process that strace sees running ssh.
        follower.lost(f"its process is an ssh traced into {path.name}")
        self._submit(follower)

    def _submit(self, follower: LogFollower) -> None:
        session = follower.session
        stored = self.store.processes.find(session.identity, session.log)
        submitting = bool(follower.pending_commands) or follower.session != stored
        commands = follower.take_commands(submitting)
        if submitting:
            self.store.submit(follower.session, commands)

    # -- retention -------------------------------------------------------

    def _delete_ingested(self) -> None:
        """Remove logs of closed sessions once the store has them durably."""
        for session in self.expiry.due(time.time()):
            path = self._log_path(session.log)
            follower = self.followers.get(path)
            if follower is None or follower.session.identity != session.identity:
                continue  # not this session's log (any more)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            del self.followers[path]
            self.progress += 1
            self.log_budget.forget(path)
            self.reclaimer.forget(path)
            if follower.spooled and self.gate is not None:
                self.gate.gone(path)
