"""The running agent's state, for `audit-agent status` and monitoring.

The daemon's main loop rewrites DATA_DIR/status.json every
`status_interval_s`, atomically and root only: its pid and process start
time, the live sessions and whether each ssh is traced, the straces, how far
the ingest is behind the logs, the store's size and last write, the events
sink. It writes it from the main loop on purpose: a loop that hangs stops the
heartbeat, and the status goes stale. On a clean stop the last write says
`stopped`.

Readers never trust the file alone: the pid must be that very process (its
start time matches) and the file must be fresh (assess()).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import AgentError
from agent.recording import CAST_SUFFIX, CASTS_DIR
from agent.records import ENDED, RecordError, iso, parse_iso
from agent.store import list_shards, write_atomic
from tracer.discovery import is_alive, read_start_ticks, read_tracer_pid

if TYPE_CHECKING:
    from agent.events import EventSink
    from agent.ingest import Ingest
    from agent.recording import Recorder
    from agent.store import Store
    from tracer.supervisor import Supervisor

STATUS_FILE = "status.json"
STALE_INTERVALS = 3  # a status older than this many intervals is stale...
MIN_STALE_S = 10.0  # ...and never sooner than this
DEFAULT_MAX_LAG_BYTES = 64 << 20
RUNNING, STOPPED = "running", "stopped"


class StatusError(AgentError):
    """A status file that cannot be read."""


@dataclass(frozen=True, slots=True)
class LiveSession:
    id: str
    tag: str
    bastion_user: str
    remote_user: str | None
    host: str | None
    port: int | None
    started_at: float
    command_count: int
    ssh_pid: int
    ssh_alive: bool
    tracer_pid: int  # 0: not traced
    lag_bytes: int  # of its log, not ingested yet
    recording_bytes: int


@dataclass(frozen=True, slots=True)
class StraceProcess:
    pid: int
    tag: str
    ssh_pid: int
    adopted: bool  # left by an earlier agent, watched by pid


@dataclass(frozen=True, slots=True)
class AgentStatus:
    pid: int
    start_ticks: int
    state: str  # "running" or "stopped"
    started_at: float
    updated_at: float
    interval_s: float
    data_dir: str
    sessions: tuple[LiveSession, ...] = ()
    straces: tuple[StraceProcess, ...] = ()
    ingest_lag_bytes: int = 0
    logs: int = 0  # session logs being followed
    store_bytes: int = 0
    shards: int = 0
    recordings_bytes: int = 0
    recording_errors: int = 0
    pending_commands: int = 0
    last_flush_at: float | None = None
    flush_errors: int = 0
    store_failing: bool = False  # the last store write failed
    events: Mapping[str, Any] | None = field(default=None)

    def to_document(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("started_at", "updated_at", "last_flush_at"):
            doc[key] = iso(doc[key]) if doc[key] is not None else None
        for session in doc["sessions"]:
            session["started_at"] = iso(session["started_at"])
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AgentStatus:
        try:
            values = dict(doc)
            for key in ("started_at", "updated_at", "last_flush_at"):
                if values.get(key) is not None:
                    values[key] = parse_iso(values[key])
            values["sessions"] = tuple(
                LiveSession(**{**s, "started_at": parse_iso(s["started_at"])})
                for s in values.get("sessions", ())
            )
            values["straces"] = tuple(
                StraceProcess(**s) for s in values.get("straces", ())
            )
            return cls(**values)
        except (KeyError, TypeError, ValueError, RecordError) as e:
            raise StatusError(f"bad status document: {e}") from e


def status_path(data_dir: Path) -> Path:
    return data_dir / STATUS_FILE


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


def collect(
    *,
    started_at: float,
    interval_s: float,
    data_dir: Path,
    store: Store,
    ingest: Ingest,
    supervisor: Supervisor,
    recorder: Recorder | None,
    sink: EventSink | None,
    state: str = RUNNING,
) -> AgentStatus:
    """The agent's state now (main thread; the others' dicts are copied whole)."""
    lag: dict[str, int] = {}
    logs = 0
    for follower in list(ingest.followers.values()):
        if follower.finished:
            continue
        logs += 1
        behind = max(0, _size(follower.path) - follower.decoder.offset)
        lag[follower.session.id] = lag.get(follower.session.id, 0) + behind
    casts = data_dir / CASTS_DIR
    sessions = []
    for s in sorted(store.sessions(), key=lambda s: s.started_at):
        if s.status in ENDED:
            continue
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
                lag_bytes=lag.get(s.id, 0),
                recording_bytes=_size(casts / f"{s.id}{CAST_SUFFIX}"),
            )
        )
    straces = tuple(
        StraceProcess(
            w.tracker.tracer_pid, w.ssh.tag, w.ssh.pid, w.tracker.popen is None
        )
        for w in list(supervisor.watches.values())
        if w.tracker is not None and w.tracker.running()
    )
    shards = list_shards(store.store_dir)
    events: dict[str, Any] | None = None
    if sink is not None:
        events = {"to": sink.description, **asdict(sink.stats)}
        for key in ("last_error_at", "last_ok_at"):
            events[key] = iso(events[key]) if events[key] is not None else None
    failing = store.flush_error_at is not None and (
        store.flushed_at is None or store.flush_error_at > store.flushed_at
    )
    return AgentStatus(
        pid=os.getpid(),
        start_ticks=read_start_ticks(os.getpid()) or 0,
        state=state,
        started_at=started_at,
        updated_at=time.time(),
        interval_s=interval_s,
        data_dir=str(data_dir),
        sessions=tuple(sessions),
        straces=straces,
        ingest_lag_bytes=sum(lag.values()),
        logs=logs,
        store_bytes=sum(_size(p) for p in shards),
        shards=len(shards),
        recordings_bytes=_dir_size(casts),
        recording_errors=recorder.errors if recorder is not None else 0,
        pending_commands=store.pending_count,
        last_flush_at=store.flushed_at,
        flush_errors=store.flush_errors,
        store_failing=failing,
        events=events,
    )


def write_status(data_dir: Path, status: AgentStatus) -> None:
    text = json.dumps(status.to_document(), ensure_ascii=False, indent=1)
    write_atomic(status_path(data_dir), text.encode("utf-8"))


def read_status(data_dir: Path) -> AgentStatus | None:
    """The last status the agent wrote; None if it never wrote one."""
    path = status_path(data_dir)
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except PermissionError as e:
        raise StatusError(
            f"cannot read {path}: permission denied (it is root's)"
        ) from e
    except (OSError, ValueError) as e:
        raise StatusError(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise StatusError(f"{path} is not a status document")
    try:
        return AgentStatus.from_document(doc)
    except StatusError as e:
        raise StatusError(f"{path}: {e}") from e


def agent_running(status: AgentStatus) -> bool:
    """Whether the pid in the status is still that very agent process."""
    return status.state == RUNNING and is_alive((status.pid, status.start_ticks))


def assess(
    status: AgentStatus | None, now: float, max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES
) -> list[str]:
    """What is wrong, one line each; an empty list means healthy."""
    if status is None:
        return ["the agent is not running (it never wrote a status here)"]
    if status.state == STOPPED:
        return [f"the agent is not running (it stopped at {iso(status.updated_at)})"]
    if not agent_running(status):
        return [
            f"the agent (pid {status.pid}) is not running; its last status is "
            f"from {iso(status.updated_at)}"
        ]
    problems = []
    age = now - status.updated_at
    if age > max(STALE_INTERVALS * status.interval_s, MIN_STALE_S):
        problems.append(f"the agent has not updated its status for {age:.0f}s")
    for s in status.sessions:
        if s.ssh_alive and not s.tracer_pid:
            problems.append(f"session {s.id} (ssh pid {s.ssh_pid}) is not traced")
    if status.store_failing:
        problems.append(f"store writes are failing ({status.flush_errors} so far)")
    if status.ingest_lag_bytes > max_lag_bytes:
        problems.append(
            f"the ingest is {status.ingest_lag_bytes / (1 << 20):.1f} MiB behind "
            "the session logs"
        )
    if status.recording_errors:
        problems.append(f"{status.recording_errors} recordings could not be written")
    events = status.events
    if events and events.get("last_error_at"):
        ok, err = events.get("last_ok_at"), events["last_error_at"]
        if ok is None or err > ok:
            problems.append(
                f"events are not getting through: {events.get('last_error')} "
                f"({events.get('backlog')} waiting, {events.get('dropped', 0)} dropped)"
            )
    return problems
