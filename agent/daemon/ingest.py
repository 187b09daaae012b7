"""Session logs to stored commands, live.

watchdog reports writes in DATA_DIR/logs; one ingest thread reads each
growing log from where it stopped, through the strace decoder and the command
builder, and hands the session's new state and commands to the store. Any log
counts, whoever started its strace (the agent, or a user through sudo).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from agent.daemon.disk import mib
from agent.daemon.follower import LogFollower
from agent.daemon.intents import IntentLinker
from agent.daemon.quarantine import keep
from agent.daemon.reclaim import Reclaimer
from agent.daemon.recorder import Recorder
from agent.daemon.spool import (
    STRACE_SUFFIX,
    SpoolError,
    decoder_for,
    read_recording_start,
    spool_usable,
)
from agent.daemon.spool_guard import (
    LOOKS_PER_ROUND,
    RecordingGate,
    SpoolEntry,
    UidBudget,
)
from agent.daemon.store import Store
from agent.records import ENDED, Command, Session, iso
from parsers.chunk_log import SUFFIX as CHUNK_SUFFIX
from parsers.pipeline import CommandPipeline
from tracer.discovery import is_alive
from tracer.session_log import SessionLogError, SessionStart, read_start
from tracer.tags import parse_ssh_argv

log = logging.getLogger(__name__)

LOG_SUFFIX = STRACE_SUFFIX
RESCAN_INTERVAL_S = 1.0  # a safety net under inotify
INGEST_NICE = 10  # parsing yields the CPU to the sessions it audits
RECORDINGS_PER_UID = 256  # recordings of one uid followed (or incomplete) at once
RECORDINGS_PER_UID_S = 5.0  # new recordings of one uid followed per second


@dataclass(frozen=True, slots=True)
class IngestSnapshot:
    """What `audit-agent status` shows of the ingest."""

    logs: int  # session logs being followed
    lag_bytes: dict[str, int]  # per session id: log bytes not ingested yet


class _Wakeup(FileSystemEventHandler):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE):
            # The ingest's own reads cause these: a file read because it was
            # read is a loop (20,000 spooled files kept it busy).
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path.endswith((LOG_SUFFIX, CHUNK_SUFFIX)):
            self.ingest.wake(Path(path))


class Ingest:
    """Owns the watchdog observer and the ingest thread."""

    def __init__(
        self,
        logs_dir: Path,
        store: Store,
        retention_s: float = 0.0,
        recorder: Recorder | None = None,
        intents: IntentLinker | None = None,
        recordings_dir: Path | None = None,
        recordings_budget: UidBudget | None = None,
        log_max_bytes: int = 0,
    ) -> None:
        self.logs_dir = logs_dir
        # audit-shell's paramiko recordings (agent/daemon/spool.py), read in place;
        # what one uid's files may cost is bounded (agent/daemon/spool_guard.py).
        self.recordings_dir = recordings_dir
        self.gate = (
            RecordingGate(
                recordings_dir,
                CHUNK_SUFFIX,
                recordings_budget
                or UidBudget("recordings", RECORDINGS_PER_UID_S, RECORDINGS_PER_UID),
            )
            if recordings_dir is not None
            else None
        )
        self.store = store
        self.retention_s = retention_s
        self.intents = intents  # audit-shell's connection records, if collected
        # A strace log past this asks for the mode's verdict (0: no bound).
        self.log_max_bytes = log_max_bytes
        self._over_budget: queue.Queue[tuple[tuple[int, int], str]] = queue.Queue()
        self._over_budget_asked: set[Path] = set()
        # What the store holds durably is given back to the disk (live logs).
        self.reclaimer = Reclaimer()
        self.recorder = recorder  # the followers feed it every event
        self.followers: dict[Path, LogFollower] = {}
        self._ignored: set[Path] = set()  # logs already reported as unusable
        self._arrivals: collections.deque[Path] = collections.deque()  # spool files
        self._arriving: set[Path] = set()  # the same, to look them up
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed: queue.Queue[Session] = queue.Queue()
        self._expiring: dict[Path, Session] = {}  # closed, durable, log kept
        self.quarantine_dir = logs_dir.parent / "quarantine"
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._thread: threading.Thread | None = None
        # Sessions an auditor terminated: identity -> their end reason.
        self._cuts: dict[tuple[int, int], str] = {}

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.logs_dir, 0o700)
        if self.intents is not None:
            self.intents.open()
        observer = Observer()
        observer.schedule(_Wakeup(self), str(self.logs_dir), recursive=False)
        if self.recordings_dir is not None and spool_usable(self.recordings_dir):
            # Without it (made later, or never): the rescan each second finds them.
            observer.schedule(_Wakeup(self), str(self.recordings_dir), recursive=False)
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then read every log to its current end once more."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._take_intents()
        self.scan()
        self.process_all(final=True)

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
        if path is not None:
            with self._dirty_lock:
                self._dirty.add(path)
        self._wake.set()

    def cut(self, identity: tuple[int, int], reason: str | None) -> None:
        """This session was terminated (any thread): its end gets `reason`.

        None takes it back (the cut could not be done after all).
        """
        if reason is None:
            self._cuts.pop(identity, None)
        else:
            self._cuts[identity] = reason
        self._wake.set()

    def on_flushed(self, sessions: list[Session]) -> None:
        """Store callback (writer thread): these states are now durable."""
        for session in sessions:
            if session.status in ENDED:
                self._closed.put(session)
            elif session.checkpoint is not None and session.log.endswith(LOG_SUFFIX):
                self.reclaimer.durable(
                    self.logs_dir / session.log, session.checkpoint.offset
                )
        if self.intents is not None:
            self.intents.flushed(sessions)
        self._wake.set()

    # -- the thread ------------------------------------------------------

    def _run(self) -> None:
        # Parsing can wait for the sessions it audits: on a busy bastion the
        # CPU goes first to ssh and its strace (which ssh waits for at every
        # syscall). Linux lets a thread have its own nice value.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICE)
        last_scan = 0.0
        while not self._stop.is_set():
            self._wake.wait(RESCAN_INTERVAL_S)
            self._wake.clear()
            now = time.monotonic()
            try:
                if now - last_scan >= RESCAN_INTERVAL_S:
                    last_scan = now
                    self._take_intents()
                    self.process_all()
                    self.scan()
                with self._dirty_lock:
                    dirty, self._dirty = self._dirty, set()
                for path in sorted(dirty):
                    if path in self.followers or path.parent == self.logs_dir:
                        self.process(path)
                    else:
                        self._arrive(path)
                self._look_at_arrivals()
                self._delete_ingested()
                self.reclaimer.run()
                if self.intents is not None:
                    self.intents.remove_durable()
            except Exception:  # the daemon boundary for this thread
                log.exception("ingest round failed; retrying")
                time.sleep(RESCAN_INTERVAL_S)

    def scan(self) -> None:
        """Notice logs that appeared without an event (startup, missed inotify)."""
        try:
            names = os.listdir(self.logs_dir)
        except FileNotFoundError:
            return
        for name in names:
            path = self.logs_dir / name
            if name.endswith(LOG_SUFFIX) and path not in self.followers:
                self.process(path)
        spool = self.recordings_dir
        if self.gate is None or spool is None or not spool_usable(spool):
            return
        for path in self.gate.arrivals():  # new, changed, or let in at last
            self._arrive(path)

    def _arrive(self, path: Path) -> None:
        """A spool file new to the ingest: looked at in turn, after the logs."""
        if path not in self._arriving and path not in self.followers:
            self._arriving.add(path)
            self._arrivals.append(path)

    def _look_at_arrivals(self) -> None:
        """At most LOOKS_PER_ROUND of them: a flood waits behind the sessions
        already audited, a round at a time."""
        for _ in range(min(LOOKS_PER_ROUND, len(self._arrivals))):
            path = self._arrivals.popleft()
            self._arriving.discard(path)
            self.process(path)
        if self._arrivals:
            self._wake.set()  # more next round, at once

    def _take_intents(self) -> None:
        if self.intents is not None:
            self.intents.poll()

    def process_all(self, final: bool = False) -> None:
        for path in list(self.followers):
            self.process(path, final=final)
            follower = self.followers.get(path)
            if follower is not None and follower.spooled and not follower.finished:
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
        if follower.read(final):
            self.wake(follower.path)  # more than a round's budget: come back soon
        self._submit(follower)
        if 0 < self.log_max_bytes < follower.size and not follower.spooled:
            self._ask_verdict(follower)
        if follower.finished and follower.spooled and self.gate is not None:
            self.gate.done(path)  # its uid may start another

    def _ask_verdict(self, follower: LogFollower) -> None:
        """Past its budget: the main loop gives the mode's verdict (once)."""
        if follower.path in self._over_budget_asked or follower.finished:
            return
        self._over_budget_asked.add(follower.path)
        reason = f"its log passed {mib(self.log_max_bytes)} (log_max_bytes)"
        log.error("session %s: %s", follower.session.id, reason)
        self._over_budget.put((follower.session.identity, reason))

    def take_over_budget(self) -> list[tuple[tuple[int, int], str]]:
        """The sessions past their log budget since the last call (any thread)."""
        found = []
        while True:
            try:
                found.append(self._over_budget.get_nowait())
            except queue.Empty:
                return found

    def _new_follower(self, path: Path) -> LogFollower | None:
        """A follower for a log seen for the first time; None: not (yet)."""
        spooled = path.parent != self.logs_dir
        gate = self.gate if spooled else None
        entry: SpoolEntry | None = None
        if gate is not None:
            entry = gate.look(path)
            if entry is None:
                return None  # unchanged since the last look, or waits its turn
        try:
            start = read_recording_start(path) if spooled else read_start(path)
            if start is None:  # the first line is not written yet
                if gate is not None and entry is not None:
                    gate.incomplete(entry)
                return None
            if gate is not None and entry is not None and not gate.may_follow(entry):
                return None
            return self._open(path, start)
        except FileNotFoundError:
            if gate is not None:
                gate.gone(path)
            return None
        except (SessionLogError, SpoolError) as e:
            if gate is None or entry is None:
                self._ignored.add(path)
                where = keep(path, self.quarantine_dir, move=True)
                log.error("%s; moved it to %s, left out of the store", e, where)
            elif gate.may_quarantine(entry):
                where = keep(path, self.quarantine_dir, move=True)
                log.error("%s; moved it to %s, left out of the store", e, where)
                gate.gone(path)
            else:
                gate.budget.refused(entry.uid, path.parent, str(e))
                gate.drop(path)
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
        session = self.store.find(start.identity)
        if session is not None and spooled and session.log != path.name:
            # A user's file may name any process: it never joins a session
            # that another log feeds.
            raise SpoolError(
                f"recording {path} claims session {session.id} of {session.log}"
            )
        if session is None:
            session = Session.new(
                self.store.new_session_id(start.tag), start, path.name
            )
            if self.intents is not None:
                # audit-shell writes its record before it starts ssh.
                self._take_intents()
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
        follower = LogFollower(
            path=path,
            session=session,
            decoder=decoder_for(path.name, start.tty),
            pipeline=CommandPipeline(session.checkpoint),
            quarantine_dir=self.quarantine_dir,
            recorder=self.recorder,
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

    def _submit(self, follower: LogFollower) -> None:
        commands = follower.take_commands()
        if commands or follower.session != self.store.find(follower.session.identity):
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
            self._over_budget_asked.discard(path)
            self.reclaimer.forget(path)
            if follower.spooled and self.gate is not None:
                self.gate.gone(path)
