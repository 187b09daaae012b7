"""The agent: discovery, straces, ingest and store wired into one daemon.

Threads and processes, and who stops them:
- the main thread polls for tagged ssh clients and supervises their straces;
- the Supervisor owns the straces (stopped first, so every log ends whole);
- the Ingest owns the watchdog observer and the ingest thread (stopped
  second, after reading every log to its end once more);
- the Store owns the writer thread (stopped last, with a final flush).
SIGTERM, SIGINT and SIGHUP all lead to that one orderly stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from agent import AgentError
from agent.config import Config
from agent.ingest import Ingest
from agent.intents import IntentLinker
from agent.store import Store
from tracer.discovery import Discovery
from tracer.supervisor import Limits, Supervisor

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


def prepare_data_dir(data_dir: Path) -> None:
    """DATA_DIR and its logs hold everything users typed: root only."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as e:
        raise DaemonError(
            f"cannot create data directory {data_dir}: {e.strerror}"
        ) from e


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.store = Store(config.store_dir, config.flush_interval_s)
        self.ingest = Ingest(
            config.logs_dir,
            self.store,
            config.log_retention_s,
            intents=IntentLinker(config.intents_dir, self.store),
        )
        self.store.on_flushed = self.ingest.on_flushed
        self.supervisor = Supervisor(
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

    def run(self) -> None:
        """Run until a stop signal (or `stop_event`); clean up in any case."""
        check_can_run(self.config)
        prepare_data_dir(self.config.data_dir)
        self.store.open()
        self.store.start()
        try:
            self.ingest.start()
            try:
                log.info(
                    "auditing tagged ssh sessions into %s (poll every %.2fs)",
                    self.config.data_dir,
                    self.config.poll_interval_s,
                )
                self._loop()
            finally:
                self.supervisor.stop()
                self.ingest.stop()
        finally:
            self.store.stop()
            log.info("stopped")

    def _loop(self) -> None:
        last_orphan_sweep = 0.0
        while not self.stop_event.is_set():
            for ssh in self.discovery.poll():
                self.supervisor.track(ssh)
            self.supervisor.supervise()
            now = time.monotonic()
            if now - last_orphan_sweep >= ORPHAN_SWEEP_INTERVAL_S:
                last_orphan_sweep = now
                self.supervisor.close_orphans()
            self.stop_event.wait(self.config.poll_interval_s)
