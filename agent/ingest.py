"""Session logs to stored commands, live.

watchdog reports writes in DATA_DIR/logs; one ingest thread reads each
growing log from where it stopped, through the strace decoder and the command
builder, and hands the session's new state and commands to the store. Any log
counts, whoever started its strace (the agent, or a user through sudo).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from agent.intents import IntentLinker
from agent.quarantine import quarantine
from agent.recording import Recorder
from agent.recordings import (
    OPEN_FLAGS,
    RECORDING_MAX_BYTES,
    STRACE_SUFFIX,
    Decoder,
    RecordingError,
    check_file,
    decoder_for,
    read_recording_start,
    spool_usable,
)
from agent.records import CLOSED, ENDED, Command, Session, iso
from agent.store import Store
from parsers.chunk_log import SUFFIX as CHUNK_SUFFIX
from parsers.events import Event, Marker, MarkerKind
from parsers.pipeline import CommandPipeline
from tracer.discovery import is_alive
from tracer.session_log import SessionLogError, read_start
from tracer.tags import parse_ssh_argv

log = logging.getLogger(__name__)

LOG_SUFFIX = STRACE_SUFFIX
READ_CHUNK_BYTES = 1 << 20
MAX_READ_PER_ROUND_BYTES = 16 << 20  # then let the other sessions have a turn
RESCAN_INTERVAL_S = 1.0  # a safety net under inotify
INGEST_NICE = 10  # parsing yields the CPU to the sessions it audits


def _with_gap(session: Session, start: float, end: float | None) -> Session:
    """The session with the gap from `start` open (end None) or closed.

    Idempotent: re-reading a log after a restart meets the same gap again,
    with its times as exact as the log has them, while the store kept them to
    the millisecond; so gaps compare as the store writes them.
    """

    def key(t: float | None) -> str | None:
        return iso(t) if t is not None else None

    gaps = [g for g in session.gaps if (key(g[0]), g[1]) != (key(start), None)]
    if all((key(a), key(b)) != (key(start), key(end)) for a, b in gaps):
        gaps.append((start, end))
    return dataclasses.replace(session, gaps=tuple(gaps))


@dataclass
class LogFollower:
    """One session log being read."""

    path: Path
    session: Session
    decoder: Decoder
    pipeline: CommandPipeline
    inode: int = 0
    interactive: bool = True
    gap_since: float | None = None  # bytes may be missing from here on
    finished: bool = False
    pending_commands: list[Command] = field(default_factory=list)
    spooled: bool = False  # a paramiko recording in the spool, written by its user
    owner_uid: int | None = None  # a spooled recording's owner, checked at each read
    last_time: float = 0.0  # of the last event read


class _Wakeup(FileSystemEventHandler):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def on_any_event(self, event: FileSystemEvent) -> None:
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
    ) -> None:
        self.logs_dir = logs_dir
        # audit-shell's paramiko recordings (agent/recordings.py), read in place.
        self.recordings_dir = recordings_dir
        self.store = store
        self.retention_s = retention_s
        self.intents = intents  # audit-shell's connection records, if collected
        self.recorder = recorder  # sees every event; committed before each submit
        self.followers: dict[Path, LogFollower] = {}
        self._ignored: set[Path] = set()  # logs already reported as unusable
        self._dirty: set[Path] = set()
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed: queue.Queue[Session] = queue.Queue()
        self._expiring: dict[Path, Session] = {}  # closed, durable, log kept
        self.quarantine_dir = logs_dir.parent / "quarantine"
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._thread: threading.Thread | None = None
        self.junk_lines = 0

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

    def wake(self, path: Path | None = None) -> None:
        if path is not None:
            with self._dirty_lock:
                self._dirty.add(path)
        self._wake.set()

    def on_flushed(self, sessions: list[Session]) -> None:
        """Store callback (writer thread): these states are now durable."""
        for session in sessions:
            if session.status in ENDED:
                self._closed.put(session)
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
                    self.scan()
                    self.process_all()
                else:
                    with self._dirty_lock:
                        dirty, self._dirty = self._dirty, set()
                    for path in sorted(dirty):
                        self.process(path)
                self._delete_ingested()
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
        if spool is None or not spool_usable(spool):
            return
        try:
            names = os.listdir(spool)
        except OSError:
            return
        for name in names:
            path = spool / name
            if name.endswith(CHUNK_SUFFIX) and path not in self.followers:
                self.process(path)

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
        """A paramiko recording whose writer is gone without an end line.

        The log was read to its end just now; read once more after the check,
        so that an end line written just before the process went still counts.
        """
        if is_alive(follower.session.identity):
            return
        self._read(follower, final=True)
        if follower.finished:
            return
        gone = time.time()
        log.error(
            "session %s: its recorder (pid %d) is gone without an end line; "
            "closing it with a gap from the last record",
            follower.session.id,
            follower.session.ssh_pid,
        )
        if follower.gap_since is None:
            follower.gap_since = follower.last_time or follower.session.started_at
        self._apply(
            follower,
            Marker(
                gone, MarkerKind.END, {"reason": "recorder ended without an end line"}
            ),
        )
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
            except (SessionLogError, RecordingError) as e:
                self._ignored.add(path)
                where = self._keep(path, move=True)
                log.error("%s; moved it to %s, left out of the store", e, where)
                return
            if follower is None:
                return
            self.followers[path] = follower
        if follower.finished:
            return
        self._read(follower, final)

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
        start = read_recording_start(path) if spooled else read_start(path)
        if start is None:
            return None  # the tracker is still writing the start line
        session = self.store.find(start.identity)
        if session is not None and spooled and session.log != path.name:
            # A user's file may name any process: it never joins a session
            # that another log feeds.
            raise RecordingError(
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
            if session.remote_command:
                # `ssh host cmd`: argv says what runs; the shell never shows it.
                commands.append(
                    Command(
                        session.id, 1, iso(start.started_at), session.remote_command
                    )
                )
                session = dataclasses.replace(session, command_count=1)
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

    def _read(self, follower: LogFollower, final: bool) -> None:
        try:
            fd = os.open(follower.path, OPEN_FLAGS)
        except FileNotFoundError:
            self._lost(follower, "its log was removed under the agent")
            return
        except OSError as e:  # a symlink put in its place (ELOOP)
            self._lost(follower, f"its log cannot be opened any more ({e.strerror})")
            return
        try:
            if follower.spooled:  # a user's file: as trusted as when it was opened
                try:
                    check_file(fd, follower.path, follower.owner_uid)
                except RecordingError as e:
                    self._lost(follower, str(e))
                    return
            st = os.fstat(fd)
            if st.st_ino != follower.inode or st.st_size < follower.decoder.offset:
                self._changed_under_us(follower, st.st_ino, st.st_size)
            if follower.spooled and st.st_size > RECORDING_MAX_BYTES:
                self._lost(follower, f"recording over {RECORDING_MAX_BYTES} bytes")
                return
            budget = MAX_READ_PER_ROUND_BYTES
            while budget > 0:
                data = os.pread(fd, READ_CHUNK_BYTES, follower.decoder.offset)
                if not data:
                    break
                budget -= len(data)
                for event in follower.decoder.feed(data):
                    self._apply(follower, event)
                if follower.finished:
                    break
            if budget <= 0:
                self.wake(follower.path)
        finally:
            os.close(fd)
        if final and not follower.finished:
            for event in follower.decoder.finish():
                self._apply(follower, event)
        self._submit(follower)

    def _changed_under_us(self, follower: LogFollower, inode: int, size: int) -> None:
        """The log was truncated or replaced: it is no longer what we read.

        What was stored stays; a copy of what is there now goes to quarantine;
        a gap opens on the session, and reading goes on from the file's end.
        """
        how = "replaced" if inode != follower.inode else "truncated"
        target = self._keep(follower.path, move=False)
        log.error(
            "session %s: log %s was %s under the agent; kept a copy at %s, "
            "marked a gap, reading on from its end",
            follower.session.id,
            follower.path,
            how,
            target,
        )
        follower.inode = inode
        follower.decoder = decoder_for(follower.path.name, follower.decoder.tty, size)
        follower.pipeline.lose_track()
        if follower.gap_since is None:
            follower.gap_since = time.time()
            follower.session = _with_gap(follower.session, follower.gap_since, None)

    def _keep(self, path: Path, move: bool) -> str:
        """Quarantine `path`; where it went, for the one log line."""
        try:
            return str(quarantine(path, self.quarantine_dir, move=move))
        except OSError as e:
            return f"nowhere ({e.strerror})"

    def _lost(self, follower: LogFollower, why: str) -> None:
        """Nothing more can be read for this session: close it, saying why."""
        now = time.time()
        session = follower.session
        log.error("session %s: %s; closing it", session.id, why)
        follower.session = dataclasses.replace(
            _with_gap(session, follower.gap_since or now, None),
            status=CLOSED,
            ended_at=now,
            end_reason=why,
        )
        follower.finished = True
        self._submit(follower)

    def _apply(self, follower: LogFollower, event: Event) -> None:
        if follower.finished:
            return
        follower.last_time = event.time
        if self.recorder is not None:
            self.recorder.event(follower.session, follower.inode, event)
        commands = follower.pipeline.feed(event) if follower.interactive else []
        for shell_command in commands:
            seq = follower.session.command_count + 1
            follower.pending_commands.append(
                Command(
                    follower.session.id,
                    seq,
                    iso(shell_command.time),
                    shell_command.text,
                    shell_command.cancelled,
                )
            )
            follower.session = dataclasses.replace(
                follower.session,
                command_count=seq,
                checkpoint=shell_command.checkpoint,
            )
        session = follower.session
        if isinstance(event, Marker) and event.kind is MarkerKind.DETACH:
            if follower.gap_since is None:
                # Open at once, so that a live session shows it: [from, null].
                follower.gap_since = event.time
                reason = event.fields.get("reason", "no reason given")
                log.warning("session %s: tracer detached (%s)", session.id, reason)
                follower.session = _with_gap(session, event.time, None)
            return
        if follower.gap_since is not None:
            # The first thing seen after a gap closes it: a re-attach, data,
            # or the end of the session.
            session = follower.session = _with_gap(
                session, follower.gap_since, event.time
            )
            follower.gap_since = None
        if isinstance(event, Marker) and event.kind is MarkerKind.END:
            self._close(follower, event)

    def _close(self, follower: LogFollower, end: Marker) -> None:
        status = end.fields.get("status")
        follower.session = dataclasses.replace(
            follower.session,
            status=status if status in ENDED else CLOSED,
            ended_at=end.time,
            end_reason=str(end.fields.get("reason") or "ended"),
        )
        follower.finished = True
        session = follower.session
        junk = follower.decoder.stats.junk
        log.info(
            "session %s closed: %s, %d commands",
            session.id,
            session.end_reason,
            session.command_count,
        )
        if junk:
            self.junk_lines += junk
            where = self._keep(follower.path, move=False)
            log.error(
                "session %s: %d unreadable lines in %s (last: %r); kept a copy at %s",
                session.id,
                junk,
                follower.path,
                follower.decoder.stats.last_junk[:80],
                where,
            )

    def _submit(self, follower: LogFollower) -> None:
        if self.recorder is not None:
            # The recording must reach as far as the checkpoint about to be stored.
            self.recorder.commit(follower.session)
        commands, follower.pending_commands = follower.pending_commands, []
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
