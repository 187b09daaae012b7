"""One session log being read: its decoder, its command pipeline, its session.

The ingest (agent/daemon/ingest.py) owns the followers and the one thread
that drives them; a follower reads its log from where it stopped, feeds every
event to the recorder and the command pipeline, and moves its session through
its states (records.Session's transitions). What it found waits in
`pending_commands` until the ingest hands it to the store.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.daemon.enforcer import Enforcer, Taken
from agent.daemon.quarantine import keep
from agent.daemon.recorder import Recorder
from agent.daemon.spool import (
    OPEN_FLAGS,
    RECORDING_MAX_BYTES,
    Decoder,
    SpoolError,
    check_file,
    decoder_for,
)
from agent.records import (
    END_STATUSES,
    Command,
    Kind,
    Session,
    SessionStatus,
    iso,
)
from parsers.events import Denied, Event, Marker, MarkerKind, Transfer
from parsers.pipeline import CommandPipeline
from parsers.zmodem import ZmodemFilter

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 20
MAX_READ_PER_ROUND_BYTES = 16 << 20  # then let the other sessions have a turn


@dataclass
class LogFollower:
    """One session log being read."""

    path: Path
    session: Session
    decoder: Decoder
    pipeline: CommandPipeline
    quarantine_dir: Path
    recorder: Recorder | None = None  # sees every event; committed before each submit
    inode: int = 0
    interactive: bool = True
    gap_since: float | None = None  # bytes may be missing from here on
    finished: bool = False
    unparsed_keys: int = 0  # of the pipeline's unparsed keys, those counted
    pending_commands: list[Command] = field(default_factory=list)
    spooled: bool = False  # a paramiko recording in the spool, written by its user
    owner_uid: int | None = None  # a spooled recording's owner, checked at each read
    last_time: float = 0.0  # of the last event read
    size: int = 0  # of the log, at the last read
    # Cut (by a rule, or an auditor's terminate): its end says so,
    # whatever the log's own end line says.
    cut_reason: str | None = None
    enforcer: Enforcer | None = None  # the command rules, when any acts
    # ZMODEM in the terminal (sz, rz): its bytes become Transfer records.
    zmodem: ZmodemFilter = field(default_factory=ZmodemFilter)

    def read(self, final: bool) -> bool:
        """Read on from the last offset; True if a round's budget ran out first."""
        try:
            fd = os.open(self.path, OPEN_FLAGS)
        except FileNotFoundError:
            self.lost("its log was removed under the agent")
            return False
        except OSError as e:  # a symlink put in its place (ELOOP)
            self.lost(f"its log cannot be opened any more ({e.strerror})")
            return False
        budget = MAX_READ_PER_ROUND_BYTES
        try:
            if self.spooled:  # a user's file: as trusted as when it was opened
                try:
                    check_file(fd, self.path, self.owner_uid)
                except SpoolError as e:
                    self.lost(str(e))
                    return False
            st = os.fstat(fd)
            self.size = st.st_size
            if st.st_ino != self.inode or st.st_size < self.decoder.offset:
                self._changed_under_us(st.st_ino, st.st_size)
            if self.spooled and st.st_size > RECORDING_MAX_BYTES:
                self.lost(f"recording over {RECORDING_MAX_BYTES} bytes")
                return False
            while budget > 0:
                # As much as fstat saw, not a whole chunk: os.pread allocates
                # what it is asked for, and a second call met the end (strace
                # -f of the agent, 20 sessions typing: two preads at every
                # read). What is written after the fstat has its inotify
                # event, for the next round.
                want = min(READ_CHUNK_BYTES, self.size - self.decoder.offset)
                data = os.pread(fd, want, self.decoder.offset) if want > 0 else b""
                if not data:
                    break
                budget -= len(data)
                for raw in self.decoder.feed(data):
                    for event in self.zmodem.feed(raw):
                        self.apply(event)
                if self.finished:
                    break
        finally:
            os.close(fd)
        if final and not self.finished:
            for raw in self.decoder.finish():
                for event in self.zmodem.feed(raw):
                    self.apply(event)
            for event in self.zmodem.finish(self.decoder.offset, time.time()):
                self.apply(event)
        return budget <= 0

    def apply(self, event: Event) -> None:
        if self.finished:
            return
        self.last_time = event.time
        if self.recorder is not None:
            self.recorder.event(self.session, self.inode, event)
        commands = self.pipeline.feed(event) if self.interactive else []
        for shell_command in commands:
            self.session = self.session.counted(shell_command.checkpoint)
            self._add(
                Command(
                    self.session.id,
                    self.session.command_count,
                    iso(shell_command.time),
                    shell_command.text,
                    shell_command.cancelled,
                    Kind(shell_command.kind.value),
                    program=shell_command.program,
                    typed=shell_command.typed,
                    keys=shell_command.keys or None,
                    unterminated=shell_command.unterminated,
                )
            )
        unparsed = self.pipeline.unparsed
        if unparsed.keys > self.unparsed_keys and unparsed.first is not None:
            # Counted once: the pipeline's count grows, the session adds the rest.
            self.session = self.session.unparsed(
                unparsed.keys - self.unparsed_keys,
                unparsed.first,
                unparsed.last or unparsed.first,
            )
            self.unparsed_keys = unparsed.keys
        if isinstance(event, Transfer):
            self._transfer(event)
        if isinstance(event, Denied):
            self._denied(event)
        if isinstance(event, Marker) and event.kind == MarkerKind.DETACH:
            if self.gap_since is None:
                # Open at once, so that a live session shows it: [from, null].
                self.gap_since = event.time
                reason = event.fields.get("reason", "no reason given")
                log.warning("session %s: tracer detached (%s)", self.session.id, reason)
                self.session = self.session.with_gap(event.time, None)
            return
        if self.gap_since is not None:
            # The first thing seen after a gap closes it: a re-attach, data,
            # or the end of the session.
            self.session = self.session.with_gap(self.gap_since, event.time)
            self.gap_since = None
        if isinstance(event, Marker) and event.kind == MarkerKind.END:
            self._close(event)

    def _transfer(self, t: Transfer) -> None:
        """A file moved: a record of kind transfer, in its place among the commands.

        Stored with a checkpoint past its own line, so a restart never reads
        it again.
        """
        self.session = self.session.counted(
            self.pipeline.builder.checkpoint(t.next_offset, 0)
        )
        fields = {
            "direction": t.direction.value,
            "path": t.path,
            "name": t.name,
            "size": t.size,
            "sha256": t.sha256,
            "started_at": iso(t.started_at),
            "outcome": t.outcome.value,
            "reason": t.reason or None,
        }
        self._add(
            Command(
                self.session.id,
                self.session.command_count,
                iso(t.time),
                f"{t.direction.value} {t.path}",
                kind=Kind.TRANSFER,
                transfer=fields,
            )
        )

    def _denied(self, d: Denied) -> None:
        """A line audit-shell refused to send: a record of kind denied."""
        self.session = self.session.counted(
            self.pipeline.builder.checkpoint(d.next_offset, 0)
        )
        action = {
            "rule": d.rule,
            "action": "deny",
            "outcome": "done",
            "detail": "the Enter was not sent; the line was cleared",
            "command_seq": None,
        }
        self._add(
            Command(
                self.session.id,
                self.session.command_count,
                iso(d.time),
                d.text,
                kind=Kind.DENIED,
                action=action,
            )
        )

    def _add(self, command: Command) -> None:
        """A new record, then what the rules did about it, right after it."""
        self.pending_commands.append(command)
        if self.enforcer is not None:
            for taken in self.enforcer.judge(self.session, command):
                self.add_taken(taken, command.time)

    def add_taken(self, taken: Taken, at: str | None = None) -> None:
        """An action's record (an alert's comes when its outcome is known)."""
        self.session = self.session.counted()
        self.pending_commands.append(
            taken.record(
                self.session.id, self.session.command_count, at or iso(time.time())
            )
        )

    def lost(self, why: str) -> None:
        """Nothing more can be read for this session: close it, saying why."""
        now = time.time()
        log.error("session %s: %s; closing it", self.session.id, why)
        self.session = self.session.with_gap(self.gap_since or now, None).ended(
            now, why
        )
        self.finished = True

    def recorder_gone(self) -> None:
        """A paramiko recording whose writer went without an end line.

        Read once more first, so that an end line written just before the
        process went still counts.
        """
        self.read(final=True)
        if self.finished:
            return
        log.error(
            "session %s: its recorder (pid %d) is gone without an end line; "
            "closing it with a gap from the last record",
            self.session.id,
            self.session.ssh_pid,
        )
        if self.gap_since is None:
            self.gap_since = self.last_time or self.session.started_at
        reason = "recorder ended without an end line"
        self.apply(Marker(time.time(), MarkerKind.END, {"reason": reason}))

    def take_commands(self, submitting: bool) -> list[Command]:
        """The commands found since the last call, for the store.

        `submitting`: the session goes to the store now, so the recording
        must reach as far as the checkpoint about to be stored.
        """
        if self.recorder is not None:
            self.recorder.commit(self.session, required=submitting)
        commands, self.pending_commands = self.pending_commands, []
        return commands

    def _changed_under_us(self, inode: int, size: int) -> None:
        """The log was truncated or replaced: it is no longer what we read.

        What was stored stays; a copy of what is there now goes to quarantine;
        a gap opens on the session, and reading goes on from the file's end.
        """
        how = "replaced" if inode != self.inode else "truncated"
        target = keep(self.path, self.quarantine_dir, move=False)
        log.error(
            "session %s: log %s was %s under the agent; kept a copy at %s, "
            "marked a gap, reading on from its end",
            self.session.id,
            self.path,
            how,
            target,
        )
        self.inode = inode
        self.decoder = decoder_for(self.path.name, self.decoder.tty, size)
        self.pipeline.lose_track()
        self.zmodem = ZmodemFilter()
        if self.gap_since is None:
            self.gap_since = time.time()
            self.session = self.session.with_gap(self.gap_since, None)

    def _close(self, end: Marker) -> None:
        status = end.fields.get("status")
        if self.cut_reason is not None:
            self.session = self.session.ended(
                end.time, self.cut_reason, SessionStatus.TERMINATED
            )
        else:
            self.session = self.session.ended(
                end.time,
                str(end.fields.get("reason") or "ended"),
                SessionStatus(status)
                if status in END_STATUSES
                else SessionStatus.CLOSED,
            )
        self.finished = True
        session = self.session
        log.info(
            "session %s closed: %s, %d commands",
            session.id,
            session.end_reason,
            session.command_count,
        )
        junk = self.decoder.stats.junk
        if junk:
            where = keep(self.path, self.quarantine_dir, move=False)
            log.error(
                "session %s: %d unreadable lines in %s (last: %r); kept a copy at %s",
                session.id,
                junk,
                self.path,
                self.decoder.stats.last_junk[:80],
                where,
            )
