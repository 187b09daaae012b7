"""The agent's status now, composed from what each owner says of itself.

The main loop writes it to DATA_DIR/status.json (agent/status_file.py) every
`status_interval_s`: from the main loop on purpose, so that a loop that hangs
stops the heartbeat and the status goes stale. Each long-running owner (the
ingest, the supervisor, the store writer, the recorder, the events sink,
the fleet shipper)
answers with a `snapshot()` of its own; nothing here reads their internals.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.casts import CAST_SUFFIX, CASTS_DIR
from agent.config import Config
from agent.daemon.alerts import AlertsSnapshot
from agent.daemon.disk import DiskSnapshot
from agent.daemon.events import SinkSnapshot
from agent.daemon.ingest import IngestSnapshot
from agent.daemon.recorder import RecorderSnapshot
from agent.daemon.retention import RetentionSnapshot
from agent.daemon.shipper import ShipperSnapshot
from agent.daemon.store import StoreSnapshot
from agent.records import iso
from agent.shards import list_shards
from agent.status_file import (
    AgentState,
    AgentStatus,
    LiveSession,
    StraceProcess,
    boot_id,
)
from tracer.discovery import is_alive, read_start_ticks, read_tracer_pid
from tracer.supervisor import SupervisorSnapshot


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _dir_size(path: Path) -> int:
    try:
        with os.scandir(path) as entries:
            return sum(e.stat().st_size for e in entries if e.is_file())
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class DiskSizes:
    """What the store and the recordings take on disk (a walk of both dirs)."""

    store_bytes: int
    shards: int
    recordings_bytes: int


def disk_sizes(data_dir: Path, store_dir: Path) -> DiskSizes:
    """These grow with the history, not with what is live: measured seldom."""
    shards = list_shards(store_dir)
    return DiskSizes(
        sum(_size(p) for p in shards), len(shards), _dir_size(data_dir / CASTS_DIR)
    )


def collect(
    *,
    started_at: float,
    config: Config,
    version: str,
    store: StoreSnapshot,
    ingest: IngestSnapshot,
    supervisor: SupervisorSnapshot,
    recorder: RecorderSnapshot | None,
    sink: SinkSnapshot | None,
    retention: RetentionSnapshot | None = None,
    shipper: ShipperSnapshot | None = None,
    alerts: AlertsSnapshot | None = None,
    state: AgentState = AgentState.RUNNING,
    disk: DiskSnapshot | None = None,
    sizes: DiskSizes | None = None,
) -> AgentStatus:
    """The agent's state from its owners' snapshots, and the live ssh processes."""
    data_dir = config.data_dir
    casts = data_dir / CASTS_DIR
    sessions = []
    for s in sorted(store.live_sessions, key=lambda s: s.started_at):
        alive = is_alive(s.identity)
        sessions.append(
            LiveSession(
                id=s.id,
                tag=s.tag,
                bastion_user=s.bastion_user,
                remote_user=s.remote_user,
                host=s.host,
                port=s.port,
                started_at=s.started_at,
                command_count=s.command_count,
                ssh_pid=s.ssh_pid,
                ssh_alive=alive,
                tracer_pid=read_tracer_pid(s.ssh_pid) if alive else 0,
                lag_bytes=ingest.lag_bytes.get(s.id, 0),
                recording_bytes=_size(casts / f"{s.id}{CAST_SUFFIX}"),
                unparsed_keys=s.unparsed_input[0] if s.unparsed_input else 0,
            )
        )
    straces = tuple(
        StraceProcess(w.tracer_pid, w.tag, w.ssh_pid, w.adopted)
        for w in supervisor.straces
    )
    sizes = sizes or disk_sizes(data_dir, store.store_dir)
    events: dict[str, Any] | None = None
    if sink is not None:
        events = {"to": sink.description, **asdict(sink.stats)}
        for key in ("last_error_at", "last_ok_at"):
            events[key] = iso(events[key]) if events[key] is not None else None
    fleet: dict[str, Any] | None = None
    if shipper is not None:
        fleet = asdict(shipper)
        for key in ("last_error_at", "last_ok_at"):
            fleet[key] = iso(fleet[key]) if fleet[key] is not None else None
    alert_doc: dict[str, Any] | None = None
    if alerts is not None:
        alert_doc = {"to": alerts.to, **alerts.stats}
        for key in ("last_error_at", "last_ok_at"):
            value = alert_doc.get(key)
            alert_doc[key] = iso(value) if value is not None else None
    return AgentStatus(
        pid=os.getpid(),
        start_ticks=read_start_ticks(os.getpid()) or 0,
        state=state,
        started_at=started_at,
        updated_at=time.time(),
        interval_s=config.status_interval_s,
        data_dir=str(data_dir),
        sessions=tuple(sessions),
        straces=straces,
        ingest_lag_bytes=sum(ingest.lag_bytes.values()),
        logs=ingest.logs,
        store_bytes=sizes.store_bytes,
        shards=sizes.shards,
        recordings_bytes=sizes.recordings_bytes,
        recording_errors=recorder.errors if recorder is not None else 0,
        pending_commands=store.pending_commands,
        last_flush_at=store.flushed_at,
        flush_errors=store.flush_errors,
        store_failing=store.failing,
        events=events,
        disk=(
            {
                "state": disk.state,
                "free_bytes": disk.free_bytes,
                "reserve_bytes": disk.reserve_bytes,
                "since": iso(disk.since) if disk.since is not None else None,
                "no_space_errors": disk.no_space_errors,
            }
            if disk is not None
            else None
        ),
        version=version,
        bastion=config.bastion_name,
        mode=config.mode,
        scope_pid=config.scope_pid,
        boot_id=boot_id(),
        chain=_chain(store),
        retention=_retention(retention),
        fleet=fleet,
        alerts=alert_doc,
    )


def _chain(store: StoreSnapshot) -> dict[str, Any] | None:
    chain = store.chain
    if chain is None:
        return None
    return {
        "chain_id": chain.chain_id,
        "links": chain.head,
        "signed_through": chain.signed_through,
        "signed_at": iso(chain.signed_at) if chain.signed_at is not None else None,
        "problem": chain.problem,
    }


def _retention(retention: RetentionSnapshot | None) -> dict[str, Any] | None:
    if retention is None:
        return None
    at = retention.last_round_at
    return {
        "last_round_at": iso(at) if at is not None else None,
        "pruned_sessions": retention.pruned_sessions,
        "errors": retention.errors,
        "last_error": retention.last_error,
    }
