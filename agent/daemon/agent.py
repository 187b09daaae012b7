"""The agent: discovery, straces, ingest and store wired into one daemon.

Threads and processes, and who stops them (one ExitStack, unwound in the
reverse order of the start):
- the main thread sleeps on a few fds (tagged ssh clients found, straces or
  untraced ssh clients that exited, the scope process's end, a stop signal,
  an auditor's terminate) and the supervisor's next timer, and acts on what
  happened;
- the DiscoveryThread owns the kernel's process events and the poll behind
  them (stopped first: nothing new is taken on while the rest stops);
- the Supervisor owns the straces and the threads that start them (stopped
  next, so every log ends whole);
- the Recorder's casts are committed and closed after the ingest's last read;
- the Ingest owns its inotify watch and the ingest thread (stopped
  after the supervisor, reading every log to its end once more);
- the Store owns the writer thread (stopped after the ingest, with a final
  flush);
- the EventSink, when configured, owns the events thread (stopped last, after
  the final flush has handed it everything durable);
- Retention owns the pruning thread (stopped before the store's last flush).
The agent holds the data directory's lock (agent/daemon/lock.py) throughout,
and the store writer chains and signs with the key in DATA_DIR/chain.
- the Shipper, with a `[fleet]` table, owns the fleet-shipping thread and its
  connection (stopped after the store's final flush, shipping what it can);
- the Alerter, when a rule alerts, owns the alerts thread (stopped after the
  ingest, whose last records may still alert); the Enforcer's cuts are run
  by the main loop, whose supervisor they need.
- the ControlServer owns the control socket's thread (stopped first): the
  web's access-log entries go to the store, its terminates to the Cutter,
  which the main loop runs.
The main loop also rewrites DATA_DIR/status.json (agent/daemon/status.py),
watches the data disk's free space (agent/daemon/disk.py) and gives the
verdicts the agent has reasons of its own for (agent/daemon/verdicts.py): a
session whose log passed its budget (the ingest asks), new and then live
sessions while the disk is nearly full. One writer per data directory (the
agent, or a prune alone), and one unscoped agent per machine.
SIGTERM, SIGINT and SIGHUP all lead to that one orderly stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from agent.config import Config, rules_of, start_lines
from agent.daemon.alerts import Alert, Alerter
from agent.daemon.control import Controller, ControlServer
from agent.daemon.coverage import Coverage
from agent.daemon.cuts import Cutter, end_reason
from agent.daemon.disk import CHECK_INTERVAL_S, DiskGuard, DiskState
from agent.daemon.enforcer import Enforcer
from agent.daemon.events import EventSink, stored_access, stored_batch
from agent.daemon.ingest import Ingest
from agent.daemon.intents import IntentLinker, uids_of
from agent.daemon.lock import agent_locks
from agent.daemon.preflight import (
    allow_fds,
    check_can_run,
    control_uids,
    prepare_data_dir,
    read_sharing,
)
from agent.daemon.recorder import Recorder
from agent.daemon.retention import Policy, Retention
from agent.daemon.shipper import Shipper
from agent.daemon.signer import Chain, Signer
from agent.daemon.spool_guard import UidBudget
from agent.daemon.status import DiskSizes, collect, disk_sizes
from agent.daemon.store import Store
from agent.daemon.verdicts import AgentSupervisor
from agent.export_record import Stamp
from agent.records import SessionStatus
from agent.status_file import AgentState, StatusText, write_status
from agent.version import version
from tracer.discovery import Discovery, TaggedSsh
from tracer.discovery_thread import DiscoveryThread
from tracer.procfs import name_threads, set_thread_nice
from tracer.supervisor import Limits
from tracer.tracker import URGENT_NICE, open_pidfd
from tracer.wake import WakePipe

log = logging.getLogger(__name__)

ORPHAN_SWEEP_INTERVAL_S = 30.0  # logs of sessions that ended while unwatched
STOP_CHECK_S = 1.0  # `stop_event` set without a wake-up is seen this soon
KILL_CHECK_S = 0.05  # while a cut's SIGKILL is due
# The store's and the recordings' sizes in the status: a walk of every shard
# and cast ever kept, so not at every status write.
DISK_SIZES_INTERVAL_S = 30.0
STATUS_REFRESH_S = 30.0  # the status is built anew at least this often
# A prune run by hand may hold the data dir for a while; then the agent waits.
PRUNE_WAIT_S = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals(
    stop: threading.Event, wake: Callable[[], None] | None = None
) -> Iterator[None]:
    """Route the stop signals to `stop` (and `wake`); restore the old handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()
        if wake is not None:
            wake()

    old = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


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
        rules = rules_of(config)
        self.alerter: Alerter | None = None
        self.enforcer: Enforcer | None = None
        if rules.acting:
            if rules.alert.enabled:
                self.alerter = Alerter(rules.alert, self._alert_outcome)
            self.enforcer = Enforcer(
                rules, config.locks_dir, config.bastion_name, self.alerter
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
        self.intents = IntentLinker(
            config.intents_dir,
            self.store,
            config.web_intents_user,
            budget=UidBudget("connection records", *per_uid),
        )
        self.ingest = Ingest(
            config.logs_dir,
            self.store,
            config.log_retention_s,
            self.recorder,
            intents=self.intents,
            recordings_dir=config.recordings_dir,
            enforcer=self.enforcer,
            recordings_budget=UidBudget("recordings", *per_uid),
            log_max_bytes=config.log_max_bytes,
        )
        if self.enforcer is not None:
            self.enforcer.end_reason = self.ingest.cut
        self.store.on_flushed = self.ingest.on_flushed
        self.sink: EventSink | None = None
        if config.events_file is not None or config.events_syslog:
            self.sink = EventSink(
                config.data_dir,
                config.events_file,
                config.events_syslog,
                config.events_syslog_facility,
                Stamp.of(config, rules),
            )
            self.store.on_committed = self.sink.committed
            self.store.on_access_committed = self.sink.access_committed
        self.shipper: Shipper | None = None
        if config.fleet.enabled:
            self.shipper = Shipper(config.data_dir, config.fleet)
            self.shipper.follow(self.store)
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
        self.discovery = Discovery(
            scope_pid=config.scope_pid, trace_untagged=config.trace_untagged
        )
        self.coverage = Coverage(self.store)
        self.retention = Retention(self.store, config.data_dir, Policy.of(config))
        self.cutter = Cutter(self.supervisor, self.ingest)
        self.started_at = time.time()
        self.version = version()
        self._status_at = 0.0
        self._status_failing = False  # logged once, not every interval
        self._wake = WakePipe()
        self._sizes: tuple[float, DiskSizes] | None = None
        # The status last built: what it was built for, when, and its text.
        self._status_text: tuple[tuple[Any, ...], float, StatusText] | None = None
        self.cutter.wake = self.wake  # a terminate is acted on at once
        if self.enforcer is not None:
            self.enforcer.wake = self.wake  # and a rule's cut
        self.ingest.log_budget.on_found = self.wake  # and a log past its budget

    def run(self) -> None:
        """Run until a stop signal (or `stop_event`); clean up in any case."""
        check_can_run(self.config)
        prepare_data_dir(self.config.data_dir, self.sharing)
        allow_fds(self.config.max_sessions)
        # Before anything in DATA_DIR is touched: it may be another agent's.
        # A refused agent says only why (its start lines would be noise).
        with agent_locks(self.config.data_dir, self.config.scope_pid, PRUNE_WAIT_S):
            for line in start_lines(self.config):
                log.info("%s", line)
            # After the start lines: a name that is no account is said here.
            self.intents.trust(uids_of(self.config.shell_users))
            data_dir = self.config.data_dir
            self.store.chain = Chain(Signer.load_or_create(data_dir), data_dir)
            self.store.open()
            self._resume_cuts()
            self._run()

    def _run(self) -> None:
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
                running.enter_context(self.retention)
                if self.recorder is not None:
                    running.enter_context(self.recorder)
                if self.alerter is not None:
                    running.enter_context(self.alerter)
                running.enter_context(self.ingest)
                running.enter_context(self.supervisor)
                running.enter_context(
                    ControlServer(
                        self.config.control_path,
                        Controller(
                            self.store,
                            self.cutter,
                            control_uids(self.config),
                            self.config.locks_dir,
                        ),
                        self.sharing,
                    )
                )
                discovery = running.enter_context(
                    DiscoveryThread(self.discovery, self.config.poll_interval_s)
                )
                log.info(
                    "auditing (%s)",
                    "process events from the kernel"
                    if discovery.using_events
                    else f"process table polled every {self.config.poll_interval_s}s",
                )
                if self.sink is not None:
                    log.info("events to %s", self.sink.description)
                name_threads()  # all of them run by now
                self._loop(discovery)
        finally:
            self._write_status(AgentState.STOPPED)
            log.info("stopped")

    def wake(self) -> None:
        """Make the main loop look around now (any thread)."""
        self._wake.wake()

    def _loop(self, discovery: DiscoveryThread) -> None:
        # The other threads run already: this one alone is urgent (it starts
        # the trackers' launchers, which inherit it).
        set_thread_nice(URGENT_NICE)
        poller = select.poll()
        for fd in (discovery.fileno(), self.supervisor.fileno(), self._wake.fileno()):
            poller.register(fd, select.POLLIN)
        # The scope process's end, from the kernel: its pid may be reused.
        scope_fd = open_pidfd(self.config.scope_pid) if self.config.scope_pid else None
        if scope_fd is not None:
            poller.register(scope_fd, select.POLLIN)
            if self.discovery.scope_gone():  # its pid was reused meanwhile
                self.stop_event.set()
        next_sweep = time.monotonic()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + ORPHAN_SWEEP_INTERVAL_S
                    self.supervisor.close_orphans()
                if now - self._status_at >= self.config.status_interval_s:
                    self._status_at = now
                    self._write_status(AgentState.RUNNING)
                waits = [
                    STOP_CHECK_S,
                    CHECK_INTERVAL_S,  # the data disk's free space
                    next_sweep - now,
                    self._status_at + self.config.status_interval_s - now,
                ]
                if (timer := self.supervisor.timeout()) is not None:
                    waits.append(timer)
                if self.cutter.killing or (self.enforcer and self.enforcer.killing):
                    waits.append(KILL_CHECK_S)
                ready = {fd for fd, _ in poller.poll(max(0.0, min(waits)) * 1000)}
                if self._wake.fileno() in ready:
                    self._wake.drain()
                disk = self.disk.check()
                for ssh in discovery.take():
                    # Untagged, or traced though it asked for no audit, on a low
                    # disk: on record only.
                    if not ssh.traced or (ssh.generated and disk != DiskState.OK):
                        self.coverage.seen(ssh)
                    elif disk == DiskState.OK:
                        self.supervisor.track(ssh)
                    else:
                        self._verdict(ssh, self.disk.reason())
                if disk == DiskState.FULL:
                    for watch in list(self.supervisor.watches.values()):
                        if watch.verdict is None:
                            self._verdict(watch.ssh, self.disk.reason())
                self._over_budget()
                self.supervisor.service()
                if self.enforcer is not None:
                    self.enforcer.run_pending()
                self.cutter.run_pending()
                if (scope_fd is not None and scope_fd in ready) or (
                    scope_fd is None and self.discovery.scope_gone()
                ):
                    log.warning(
                        "scope pid %d has ended: stopping (its pid may be reused)",
                        self.config.scope_pid,
                    )
                    self.stop_event.set()
        finally:
            if scope_fd is not None:
                os.close(scope_fd)

    def _alert_outcome(self, alert: Alert, delivered: bool, detail: str) -> None:
        """The alerts thread: an alert's outcome, a record of its session."""
        assert self.enforcer is not None
        self.ingest.taken(
            alert.identity, self.enforcer.alert_taken(alert, delivered, detail)
        )

    def _over_budget(self) -> None:
        """The sessions whose log the ingest found past log_max_bytes."""
        for identity, reason in self.ingest.log_budget.take():
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
        strict = self.supervisor.strict(ssh)
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

    def _status_key(self, state: AgentState) -> tuple[Any, ...]:
        """What moves whenever anything the status shows may have changed.

        Counters and small snapshots only: nothing here looks at each session,
        so the heartbeat of idle sessions costs nothing per session. What
        moves with no event (free space, a log that grew while the ingest
        was stuck) is caught by STATUS_REFRESH_S.
        """
        chain = self.store.chain
        disk = self.disk.snapshot()
        return (
            state,
            self.store.flushed_at,
            self.store.flush_errors,
            self.store.flush_error_at,
            chain.snapshot() if chain is not None else None,
            self.ingest.progress,
            self.supervisor.changes,
            self.supervisor.stats.wakeups,
            self.recorder.snapshot() if self.recorder else None,
            self.sink.snapshot() if self.sink else None,
            self.retention.snapshot(),
            self.shipper.snapshot() if self.shipper else None,
            self.alerter.snapshot() if self.alerter else None,
            disk.state,
            disk.no_space_errors,
            self._sizes[0] if self._sizes is not None else None,
        )

    def _write_status(self, state: AgentState) -> None:
        now = time.monotonic()
        if self._sizes is None or now - self._sizes[0] >= DISK_SIZES_INTERVAL_S:
            self._sizes = (now, disk_sizes(self.config.data_dir, self.config.store_dir))
        key = self._status_key(state)
        built = self._status_text
        if built is None or built[0] != key or now - built[1] >= STATUS_REFRESH_S:
            status = collect(
                started_at=self.started_at,
                config=self.config,
                version=self.version,
                store=self.store.snapshot(),
                ingest=self.ingest.snapshot(),
                supervisor=self.supervisor.snapshot(),
                recorder=self.recorder.snapshot() if self.recorder else None,
                sink=self.sink.snapshot() if self.sink else None,
                retention=self.retention.snapshot(),
                shipper=self.shipper.snapshot() if self.shipper else None,
                alerts=self.alerter.snapshot() if self.alerter else None,
                state=state,
                sizes=self._sizes[1],
                disk=self.disk.snapshot(),
            )
            built = self._status_text = (key, now, StatusText(status))
        try:
            write_status(self.config.data_dir, built[2], self.sharing.file_mode)
        except OSError as e:  # a full disk must not stop the auditing
            if not self._status_failing:
                log.error("cannot write %s/status.json: %s", self.config.data_dir, e)
            self._status_failing = True
            return
        self._status_failing = False
