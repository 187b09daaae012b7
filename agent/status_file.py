"""The status file: the running agent's state, for `audit-agent status` and monitoring.

The daemon's main loop (agent/daemon/status.py) rewrites DATA_DIR/status.json every
`status_interval_s`, atomically and root only (built anew when something in
it may have changed, else the last one with the new time): its pid and process start
time, the live sessions and whether each ssh is traced, the straces, how far
the ingest is behind the logs, the store's size and last write, the events
sink. It writes it from the main loop on purpose: a loop that hangs stops the
heartbeat, and the status goes stale. On a clean stop the last write says
`stopped`.

Readers never trust the file alone: the pid must be that very process (its
start time matches, in this very boot of this machine), the file must name
the data directory it is read from (a copied data directory carries the
status of an agent that never wrote there), and it must be fresh (assess()).
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.files import PRIVATE_FILE_MODE, write_atomic
from agent.records import RecordError, iso, parse_iso, shallow_dict
from tracer.discovery import is_alive

STATUS_FILE = "status.json"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
STALE_INTERVALS = 3  # a status older than this many intervals is stale...
MIN_STALE_S = 10.0  # ...and never sooner than this
DEFAULT_MAX_LAG_BYTES = 64 << 20


class AgentState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # the last write of a clean stop


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
    unparsed_keys: int = 0  # keys typed the parser could not place (issue 14)


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
    state: AgentState
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
    # The data disk against the reserve (agent/daemon/disk.py): state ok, low
    # or full, free_bytes, reserve_bytes, since, no_space_errors.
    disk: Mapping[str, Any] | None = field(default=None)
    # Who wrote it: what `audit-agent status` shows, and what tells that
    # agent's own status from a copy (boot_id: this boot of this machine).
    version: str = ""
    bastion: str = ""
    mode: str = ""
    scope_pid: int = 0
    boot_id: str = ""
    chain: Mapping[str, Any] | None = None  # the hash chain: id, links, signed
    retention: Mapping[str, Any] | None = None  # the last prune round
    fleet: Mapping[str, Any] | None = field(default=None)  # the fleet shipper's
    alerts: Mapping[str, Any] | None = field(default=None)  # the rules' alerts

    def to_document(self) -> dict[str, Any]:
        doc = shallow_dict(self)  # the mappings are the snapshots' own copies
        for key in ("started_at", "updated_at", "last_flush_at"):
            doc[key] = iso(doc[key]) if doc[key] is not None else None
        doc["sessions"] = [
            {**shallow_dict(s), "started_at": iso(s.started_at)} for s in self.sessions
        ]
        doc["straces"] = [shallow_dict(s) for s in self.straces]
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
            values["state"] = AgentState(values["state"])
            return cls(**values)
        except (KeyError, TypeError, ValueError, RecordError) as e:
            raise StatusError(f"bad status document: {e}") from e


def status_path(data_dir: Path) -> Path:
    return data_dir / STATUS_FILE


class StatusText:
    """A status encoded once, for as many heartbeats as it stays true: each
    write only puts the time in front (`updated_at`), so a heartbeat of idle
    sessions costs nothing per session."""

    def __init__(self, status: AgentStatus) -> None:
        doc = status.to_document()
        del doc["updated_at"]
        # Compact: json's C encoder does not do indent (json/encoder.py).
        self._rest = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    def at(self, updated_at: float) -> bytes:
        head = '{"updated_at":' + json.dumps(iso(updated_at)) + ","
        return (head + self._rest[1:]).encode("utf-8")


def write_status(
    data_dir: Path, status: AgentStatus | StatusText, mode: int = PRIVATE_FILE_MODE
) -> None:
    """Write the status: an AgentStatus at its own time, a StatusText at now."""
    if isinstance(status, AgentStatus):
        data = StatusText(status).at(status.updated_at)
    else:
        data = status.at(time.time())
    write_atomic(status_path(data_dir), data, mode)


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


def boot_id() -> str:
    """This boot of this machine (a process start time counts from it)."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


def _same_dir(written_for: str, data_dir: Path) -> bool:
    try:
        return os.path.samefile(written_for, data_dir)
    except OSError:
        return False


def not_running(status: AgentStatus, data_dir: Path | None = None) -> str | None:
    """Why the status is not that of an agent running on `data_dir` now, or None.

    `data_dir`: the directory the status was read from (None: not checked).
    """
    if status.state == AgentState.STOPPED:
        return f"the agent is not running (it stopped at {iso(status.updated_at)})"
    if status.boot_id and status.boot_id != boot_id():
        return (
            f"the agent (pid {status.pid}) is not running: its status is from "
            "another machine or an earlier boot (a copied data directory?)"
        )
    if data_dir is not None and not _same_dir(status.data_dir, data_dir):
        return (
            f"no agent runs on {data_dir}: its status was written for "
            f"{status.data_dir} (a copied data directory?)"
        )
    if not is_alive((status.pid, status.start_ticks)):
        return (
            f"the agent (pid {status.pid}) is not running; its last status is "
            f"from {iso(status.updated_at)}"
        )
    return None


def agent_running(status: AgentStatus, data_dir: Path | None = None) -> bool:
    """Whether the status is that of the agent running on `data_dir` now."""
    return not_running(status, data_dir) is None


def assess(
    status: AgentStatus | None,
    now: float,
    max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES,
    data_dir: Path | None = None,
) -> list[str]:
    """What is wrong, one line each; an empty list means healthy."""
    if status is None:
        return ["the agent is not running (it never wrote a status here)"]
    gone = not_running(status, data_dir)
    if gone is not None:
        return [gone]
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
    disk = status.disk
    if disk and disk.get("state") in ("low", "full"):
        free, reserve = disk.get("free_bytes", 0), disk.get("reserve_bytes", 0)
        what = (
            "new sessions are refused (strict) or not traced (permissive)"
            if disk["state"] == "low"
            else "live sessions are ended (strict) or no longer traced (permissive)"
        )
        problems.append(
            f"the data disk is {'nearly ' if disk['state'] == 'low' else ''}full "
            f"since {disk.get('since')}: {free / (1 << 20):.1f} MiB free, the "
            f"reserve is {reserve / (1 << 20):.1f} MiB; {what}"
        )
    if status.chain and status.chain.get("problem"):
        problems.append(f"the record is not being signed: {status.chain['problem']}")
    if status.retention and status.retention.get("last_error"):
        problems.append(f"retention: {status.retention['last_error']}")
    events = status.events
    if events and _failing(events):
        problems.append(
            f"events are not getting through: {events.get('last_error')} "
            f"({events.get('backlog')} waiting, {events.get('dropped', 0)} dropped)"
        )
    problems.extend(fleet_problems(status.fleet))
    alerts = status.alerts
    if alerts and _failing(alerts):
        problems.append(
            f"alerts are not getting through: {alerts.get('last_error')} "
            f"({alerts.get('pending', 0)} waiting, {alerts.get('failed', 0)} given up)"
        )
    return problems


def _failing(sender: Mapping[str, Any]) -> bool:
    """A sender's last attempt failed (its times are ISO 8601 text)."""
    ok, err = sender.get("last_ok_at"), sender.get("last_error_at")
    return err is not None and (ok is None or err > ok)


def fleet_problems(fleet: Mapping[str, Any] | None) -> list[str]:
    """The fleet shipper's part of assess(): too far behind, or refused.

    A database that is merely away is no problem until the lag passes its
    limits: the local store is the buffer. One that refuses (a password, the
    schema version, a conflict) needs a person at once.
    """
    if not fleet:
        return []
    problems = []
    if fleet.get("state") == "blocked":
        problems.append(f"fleet shipping is refused: {fleet.get('last_error')}")
    lag_s, lag_records = fleet.get("lag_s", 0.0), fleet.get("lag_records", 0)
    if lag_s > fleet.get("max_lag_s", float("inf")) or lag_records > fleet.get(
        "max_lag_records", float("inf")
    ):
        why = f" ({fleet.get('last_error')})" if fleet.get("last_error") else ""
        problems.append(
            f"the fleet store is {lag_records} records, {lag_s:.0f}s behind{why}"
        )
    return problems
