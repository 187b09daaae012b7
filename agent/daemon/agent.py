"""The agent: discovery, straces, ingest and store wired into one daemon.

Threads and processes, and who stops them (one ExitStack, unwound in the
reverse order of the start):
- the main thread polls for tagged ssh clients and supervises their straces;
- the Supervisor owns the straces (stopped first, so every log ends whole);
- the Recorder's casts are committed and closed after the ingest's last read;
- the Ingest owns the watchdog observer and the ingest thread (stopped
  after the supervisor, reading every log to its end once more);
- the Store owns the writer thread (stopped after the ingest, with a final
  flush);
- the EventSink, when configured, owns the events thread (stopped last, after
  the final flush has handed it everything durable);
- the Shipper, with a `[fleet]` table, owns the fleet-shipping thread and its
  connection (stopped after the store's final flush, shipping what it can);
- the ControlServer owns the control socket's thread (stopped first): the
  web's access-log entries go to the store, its terminates to the Cutter,
  which the main loop runs.
The main loop also rewrites DATA_DIR/status.json (agent/daemon/status.py),
watches the data disk's free space (agent/daemon/disk.py) and gives the
verdicts the agent has reasons of its own for (agent/daemon/verdicts.py): a
session whose log passed its budget (the ingest asks), new and then live
sessions while the disk is nearly full. One agent per data directory, and one
unscoped agent per machine (agent/daemon/lock.py).
SIGTERM, SIGINT and SIGHUP all lead to that one orderly stop.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from agent import AgentError
from agent.config import Config
from agent.daemon.control import Controller, ControlServer
from agent.daemon.cuts import Cutter, end_reason
from agent.daemon.disk import DiskGuard, DiskState
from agent.daemon.events import EventSink, stored_access, stored_batch
from agent.daemon.ingest import Ingest
from agent.daemon.intents import IntentLinker
from agent.daemon.lock import agent_locks
from agent.daemon.recorder import Recorder
from agent.daemon.shipper import Shipper
from agent.daemon.spool_guard import UidBudget
from agent.daemon.status import collect
from agent.daemon.store import Store
from agent.daemon.verdicts import AgentSupervisor
from agent.files import Sharing
from agent.records import Command, Session, SessionStatus
from agent.status_file import AgentState, write_status
from tracer import Mode
from tracer.discovery import Discovery, TaggedSsh, read_start_ticks
from tracer.supervisor import Limits

log = logging.getLogger(__name__)

ORPHAN_SWEEP_INTERVAL_S = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class DaemonError(AgentError):
    """The agent cannot start."""


def check_can_run(config: Config) -> None:
    """Refuse to start without what tracing needs, naming what is missing."""
    if os.geteuid() != 0:
        raise DaemonError(
            "must run as root: strace attaches to other users' ssh processes"
        )
    if shutil.which("strace") is None:
        raise DaemonError("strace is not installed (apt-get install strace)")
    script = config.tracker_script
    if not (script.is_file() and os.access(script, os.X_OK)):
        raise DaemonError(f"tracker script {script} is missing or not executable")
    if config.scope_pid and read_start_ticks(config.scope_pid) is None:
        raise DaemonError(f"scope pid {config.scope_pid}: no such process")


@contextlib.contextmanager
def stop_signals(stop: threading.Event) -> Iterator[None]:
    """Route the stop signals to `stop`; restore the old handlers after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def prepare_data_dir(data_dir: Path, sharing: Sharing) -> None:
    """DATA_DIR: root only, or also readable by `read_group` (its logs never)."""
    try:
        sharing.directory(data_dir)
    except OSError as e:
        raise DaemonError(
            f"cannot create data directory {data_dir}: {e.strerror}"
        ) from e


def read_sharing(config: Config) -> Sharing:
    """Who besides root may read the store, the recordings and the status."""
    if not config.read_group:
        return Sharing()
    try:
        return Sharing(grp.getgrnam(config.read_group).gr_gid)
    except KeyError as e:
        raise DaemonError(f"read_group {config.read_group!r} is not a group") from e


def control_uids(config: Config) -> frozenset[int]:
    """Root, and the web's account: who the control socket serves."""
    if not config.web_intents_user:
        return frozenset({0})
    try:
        return frozenset({0, pwd.getpwnam(config.web_intents_user).pw_uid})
    except KeyError as e:
        raise DaemonError(
            f"web_intents_user {config.web_intents_user!r} is not an account"
        ) from e


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.sharing = read_sharing(config)
        self.disk = DiskGuard(config.data_dir, config.disk_reserve_bytes)
        self.store = Store(
            config.store_dir,
            config.flush_interval_s,
            sharing=self.sharing,
            disk=self.disk,
        )
        self.recorder = (
            Recorder(
                config.data_dir,
                config.recording_max_bytes,
                config.recording_burst_max_bytes,
                self.sharing,
            )
            if config.recording
            else None
        )
        if self.recorder is not None:
            self.recorder.disk = self.disk
        per_uid = (config.spool_rate_per_uid_s, config.spool_max_per_uid)
        self.ingest = Ingest(
            config.logs_dir,
            self.store,
            config.log_retention_s,
            self.recorder,
            intents=IntentLinker(
                config.intents_dir,
                self.store,
                config.web_intents_user,
                UidBudget("connection records", *per_uid),
            ),
            recordings_dir=config.recordings_dir,
            recordings_budget=UidBudget("recordings", *per_uid),
            log_max_bytes=config.log_max_bytes,
        )
        self.store.on_flushed = self.ingest.on_flushed
        self.sink: EventSink | None = None
        if config.events_file is not None or config.events_syslog:
            self.sink = EventSink(
                config.data_dir,
                config.events_file,
                config.events_syslog,
                config.events_syslog_facility,
            )
            self.store.on_committed = self.sink.committed
            self.store.on_access_committed = self.sink.access_committed
        self.shipper: Shipper | None = None
        if config.fleet.enabled:
            shipper = self.shipper = Shipper(config.data_dir, config.fleet)
            also = self.store.on_committed

            def committed(batch: list[tuple[Session, list[Command]]]) -> None:
                if also is not None:
                    also(batch)
                shipper.wake()

            self.store.on_committed = committed
        self.supervisor = AgentSupervisor(
            config.tracker_script,
            config.data_dir,
            config.mode,
            Limits(
                attach_deadline_s=config.attach_deadline_s,
                max_sessions=config.max_sessions,
                max_new_sessions_per_s=config.max_new_sessions_per_s,
            ),
        )
        self.discovery = Discovery(scope_pid=config.scope_pid)
        self.cutter = Cutter(self.supervisor, self.ingest)
        self.started_at = time.time()
        self._status_at = 0.0
        self._status_failing = False  # logged once, not every interval

    def run(self) -> None:
        """Run until a stop signal (or `stop_event`); clean up in any case."""
        check_can_run(self.config)
        prepare_data_dir(self.config.data_dir, self.sharing)
        # Before anything in DATA_DIR is touched: it may be another agent's.
        with agent_locks(self.config.data_dir, self.config.scope_pid):
            self._run_locked()

    def _run_locked(self) -> None:
        self.store.open()
        self._resume_cuts()
        try:
            with contextlib.ExitStack() as running:
                if self.sink is not None:
                    data_dir = self.config.data_dir
                    self.sink.open(
                        self.store.sessions(),
                        lambda ids: stored_batch(data_dir, ids),
                        self.store.access_seq,
                        lambda seq: stored_access(data_dir, seq),
                    )
                    running.enter_context(self.sink)
                if self.shipper is not None:
                    running.enter_context(self.shipper)
                self.store.start()
                running.callback(self.store.stop)
                if self.recorder is not None:
                    running.enter_context(self.recorder)
                running.enter_context(self.ingest)
                running.callback(self.supervisor.stop)
                running.enter_context(
                    ControlServer(
                        self.config.control_path,
                        Controller(self.store, self.cutter, control_uids(self.config)),
                        self.sharing,
                    )
                )
                log.info(
                    "auditing tagged ssh sessions into %s (poll every %.2fs)",
                    self.config.data_dir,
                    self.config.poll_interval_s,
                )
                if self.sink is not None:
                    log.info("events to %s", self.sink.description)
                self._loop()
        finally:
            self._write_status(AgentState.STOPPED)
            log.info("stopped")

    def _loop(self) -> None:
        last_orphan_sweep = 0.0
        while not self.stop_event.is_set():
            disk = self.disk.check()
            for ssh in self.discovery.poll():
                if disk == DiskState.OK:
                    self.supervisor.track(ssh)
                else:
                    self._verdict(ssh, self.disk.reason())
            if disk == DiskState.FULL:
                for watch in list(self.supervisor.watches.values()):
                    if watch.verdict is None:
                        self._verdict(watch.ssh, self.disk.reason())
            self._over_budget()
            self.supervisor.supervise()
            self.cutter.run_pending()
            now = time.monotonic()
            if now - last_orphan_sweep >= ORPHAN_SWEEP_INTERVAL_S:
                last_orphan_sweep = now
                self.supervisor.close_orphans()
                if self.discovery.scope_gone():
                    log.warning(
                        "scope pid %d has ended: stopping (its pid may be reused)",
                        self.config.scope_pid,
                    )
                    self.stop_event.set()
            if now - self._status_at >= self.config.status_interval_s:
                self._status_at = now
                self._write_status(AgentState.RUNNING)
            self.stop_event.wait(self.config.poll_interval_s)

    def _over_budget(self) -> None:
        """The sessions whose log the ingest found past log_max_bytes."""
        for identity, reason in self.ingest.take_over_budget():
            watch = self.supervisor.watches.get(identity)
            if watch is None:
                log.error(
                    "ssh %d: %s, but it is not ours to judge", identity[0], reason
                )
                continue
            self._verdict(watch.ssh, reason)

    def _verdict(self, ssh: TaggedSsh, reason: str) -> None:
        """The mode's verdict for a reason of the agent's own.

        In strict mode the ingest is told first: the ssh's exit may reach its
        log before the supervisor's end line, and the session's end must
        still say why it was ended.
        """
        watch = self.supervisor.watches.get(ssh.identity)
        if watch is not None and watch.verdict is not None:
            return  # judged before, for its own reason
        strict = self.config.mode == Mode.STRICT
        if strict:
            self.ingest.cut(ssh.identity, f"terminated: {reason}")
        if not self.supervisor.give_verdict(ssh, reason) and strict:
            self.ingest.cut(ssh.identity, None)

    def _resume_cuts(self) -> None:
        """Terminates of sessions still live when the last agent stopped."""
        sessions = {s.id: s for s in self.store.sessions()}
        for sid, entry in self.store.terminated.items():
            session = sessions.get(sid)
            if session is not None and session.status == SessionStatus.LIVE:
                self.ingest.cut(session.identity, end_reason(entry.actor, entry.detail))

    def _write_status(self, state: AgentState) -> None:
        try:
            write_status(
                self.config.data_dir,
                collect(
                    started_at=self.started_at,
                    interval_s=self.config.status_interval_s,
                    data_dir=self.config.data_dir,
                    store=self.store.snapshot(),
                    ingest=self.ingest.snapshot(),
                    supervisor=self.supervisor.snapshot(),
                    recorder=self.recorder.snapshot() if self.recorder else None,
                    sink=self.sink.snapshot() if self.sink else None,
                    shipper=self.shipper.snapshot() if self.shipper else None,
                    state=state,
                    disk=self.disk.snapshot(),
                ),
                self.sharing.file_mode,
            )
        except OSError as e:  # a full disk must not stop the auditing
            if not self._status_failing:
                log.error("cannot write %s/status.json: %s", self.config.data_dir, e)
            self._status_failing = True
            return
        self._status_failing = False
