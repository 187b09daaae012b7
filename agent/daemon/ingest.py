"""Session logs to stored commands, live.

inotify reports changed logs in DATA_DIR/logs (agent/daemon/log_watch.py:
only a log that grew, appeared or went, never the ingest's own reads); one
ingest thread reads each growing log from where it stopped, through the
strace decoder and the command builder, and hands the session's new state
and commands to the store. Any log counts, whoever started its strace (the
agent, or a user through sudo). The writes of one moment are read once: the
thread waits COALESCE_S after a wake-up before it reads what changed.
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
from agent.daemon.log_watch import LogWatch
from agent.daemon.quarantine import keep
from agent.daemon.recorder import Recorder
from agent.daemon.spool import (
    STRACE_SUFFIX,
    SpoolError,
    decoder_for,
    read_recording_start,
    spool_usable,
)
from agent.daemon.store import Store
from agent.records import ENDED, NOT_TRACED, Command, Session, iso
from parsers.chunk_log import SUFFIX as CHUNK_SUFFIX
from parsers.pipeline import CommandPipeline
from tracer.discovery import is_alive
from tracer.session_log import SessionLogError, SessionStart, read_start
from tracer.tags import parse_ssh_argv
from tracer.wake import WakePipe

log = logging.getLogger(__name__)

LOG_SUFFIX = STRACE_SUFFIX
RESCAN_INTERVAL_S = 1.0  # intents; spooled writers gone; an unwatched spool
REREAD_INTERVAL_S = 10.0  # every log looked for and read again: a net under inotify
COALESCE_S = 0.01  # the writes of one keystroke or one output are read at once
INGEST_NICE = 10  # parsing yields the CPU to the sessions it audits


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
    ) -> None:
        self.logs_dir = logs_dir
        self.enforcer = enforcer  # the command rules, when any acts
        # audit-shell's paramiko recordings (agent/daemon/spool.py), read in place.
        self.recordings_dir = recordings_dir
        self.store = store
        self.retention_s = retention_s
        self.intents = intents  # audit-shell's connection records, if collected
        self.recorder = recorder  # the followers feed it every event
        self.followers: dict[Path, LogFollower] = {}
        self._ignored: set[Path] = set()  # logs already reported as unusable
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = WakePipe()
        self._stop = threading.Event()
        self._closed: queue.Queue[Session] = queue.Queue()
        self._expiring: dict[Path, Session] = {}  # closed, durable, log kept
        self.quarantine_dir = logs_dir.parent / "quarantine"
        self._watch: LogWatch | None = None
        self._spool_watched = False
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
            self._spool_watched = True
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
        """Store callback (writer thread): these states are now durable."""
        for session in sessions:
            if session.status in ENDED:
                self._closed.put(session)
        if self.intents is not None:
            self.intents.flushed(sessions)
        self._wake_up()

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        # Parsing can wait for the sessions it audits: on a busy bastion the
        # CPU goes first to ssh and its strace (which ssh waits for at every
        # syscall). Linux lets a thread have its own nice value.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICE)
        assert self._watch is not None
        poller = select.poll()
        poller.register(self._watch.fileno(), select.POLLIN)
        poller.register(self._wake.fileno(), select.POLLIN)
        last_scan = last_reread = 0.0
        while not self._stop.is_set():
            timeout = max(0.0, last_scan + RESCAN_INTERVAL_S - time.monotonic())
            if poller.poll(timeout * 1000):
                self._stop.wait(COALESCE_S)  # let the rest of this write land
            now = time.monotonic()
            try:
                self._store_taken()
                self._wake.drain()
                changed, lost = self._watch.read()
                if lost:
                    last_scan = last_reread = 0.0  # inotify overflowed: read all
                with self._dirty_lock:
                    dirty, self._dirty = self._dirty | changed, set()
                for path in sorted(dirty):
                    self.process(path)
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
                self._delete_ingested()
                if self.intents is not None:
                    self.intents.remove_durable()
            except Exception:  # the daemon boundary for this thread
                log.exception("ingest round failed; retrying")
                self._stop.wait(RESCAN_INTERVAL_S)

    def scan(self, logs: bool = True) -> None:
        """Notice logs that appeared without an event (startup, missed inotify).

        `logs=False`: only the paramiko spool, when inotify does not watch it.
        """
        known = {str(path) for path in self.followers}
        if logs:
            self._scan_dir(self.logs_dir, LOG_SUFFIX, known)
        spool = self.recordings_dir
        wanted = logs or not self._spool_watched
        if spool is not None and wanted and spool_usable(spool):
            self._scan_dir(spool, CHUNK_SUFFIX, known)

    def _scan_dir(self, directory: Path, suffix: str, known: set[str]) -> None:
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            if name.endswith(suffix) and f"{directory}/{name}" not in known:
                self.process(directory / name)

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
            try:
                follower = self._open(path)
            except FileNotFoundError:
                return
            except (SessionLogError, SpoolError) as e:
                self._ignored.add(path)
                where = keep(path, self.quarantine_dir, move=True)
                log.error("%s; moved it to %s, left out of the store", e, where)
                return
            if follower is None:
                return
            self.followers[path] = follower
        if follower.finished:
            return
        follower.cut_reason = self._cuts.get(follower.session.identity)
        if follower.read(final):
            self.wake(follower.path)  # more than a round's budget: come back soon
        self._submit(follower)

    def _is_log(self, path: Path) -> bool:
        if path.parent == self.logs_dir:
            return path.name.endswith(LOG_SUFFIX)
        return path.parent == self.recordings_dir and path.name.endswith(CHUNK_SUFFIX)

    def _log_path(self, name: str) -> Path:
        """Where a session's log lives, by its suffix (Session.log is a name)."""
        if name.endswith(CHUNK_SUFFIX) and self.recordings_dir is not None:
            return self.recordings_dir / name
        return self.logs_dir / name

    def _open(self, path: Path) -> LogFollower | None:
        inode = os.stat(path, follow_symlinks=False).st_ino
        spooled = path.parent != self.logs_dir
        if spooled:
            start = read_recording_start(path, self._proven)
        else:
            start = read_start(path)
        if start is None:
            return None  # the tracker is still writing the start line
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
            session = self._new_session(start, path)
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
            self._closed.put(session)  # ingested before; only the file is left
        elif session.checkpoint is not None:
            follower.decoder.offset = session.checkpoint.offset
        return follower

    def _new_session(self, start: SessionStart, path: Path) -> Session:
        # audit-shell writes its record before it starts ssh: stored first, so
        # that the record keeps the tag's id and this session does not take it.
        self._take_intents()
        session = Session.new(self.store.new_session_id(start.tag), start, path.name)
        if self.intents is not None:
            session = self.intents.link(start, session)
        commands: list[Command] = []
        remote_command = session.remote_command
        if remote_command:
            # `ssh host cmd`: argv says what runs; the shell never shows it.
            session = session.counted()
            commands.append(
                Command(session.id, 1, iso(start.started_at), remote_command)
            )
        self.store.submit(session, commands)
        log.info(
            "session %s: %s -> %s@%s:%s on %s",
            session.id,
            session.bastion_user,
            session.remote_user,
            session.host,
            session.port,
            session.tty,
        )
        return session

    def _proven(self, start: SessionStart, proof: str) -> bool:
        """Whether audit-shell's connection record vouches for this recording."""
        if self.intents is None or not proof:
            return False
        self._take_intents()  # written before the recording: read it first
        return self.intents.proven(start, proof)

    def _supersede(self, other: Session, path: Path) -> None:
        """A strace log for a process that `other`, from another log, names."""
        log.warning(
            "session %s (%s) names the process of the log %s; that log gets a "
            "session of its own",
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
        while True:
            try:
                session = self._closed.get_nowait()
            except queue.Empty:
                break
            self._expiring[self._log_path(session.log)] = session
        now = time.time()
        for path, session in list(self._expiring.items()):
            if now - (session.ended_at or 0.0) < self.retention_s:
                continue
            del self._expiring[path]
            follower = self.followers.get(path)
            if follower is None or follower.session.identity != session.identity:
                continue  # not this session's log (any more)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            del self.followers[path]
