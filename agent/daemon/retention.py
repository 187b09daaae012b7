"""Retention: the running agent prunes what agent.toml keeps no longer.

A thread of its own (so a round never holds up discovery) runs a round
FIRST_ROUND_DELAY_S after the start and every ROUND_INTERVAL_S after, sooner
while a round had more to do than its bounds allow: at most
MAX_SESSIONS_PER_ROUND sessions from at most MAX_SHARDS_PER_ROUND shards,
and MAX_FILES_PER_ROUND recordings or quarantined files. A round prunes
ended sessions older than `retention_days` with their commands and
recordings (the store writer rewrites the shards behind a signed prune
record, agent/daemon/prune.py), recordings older than
`recording_retention_days`, and quarantined files older than
`quarantine_retention_days`; never a session on legal hold (agent/holds.py).

`audit-agent prune` asks the running agent through DATA_DIR/requests (root
only): it writes `prune-ID.json`, the agent carries the prune out in rounds
and answers `prune-ID.result.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.casts import CASTS_DIR, cast_path
from agent.config import Config
from agent.daemon.cast_state import STATE_SUFFIX
from agent.daemon.prune import PruneResult
from agent.daemon.store import KEPT_STATUSES, Store
from agent.files import write_atomic
from agent.holds import Hold, holds_locked, read_holds
from agent.records import iso

log = logging.getLogger(__name__)

DAY_S = 86400.0
FIRST_ROUND_DELAY_S = 2.0
ROUND_INTERVAL_S = 600.0
BUSY_ROUND_INTERVAL_S = 1.0  # the round before hit its bounds
REQUEST_POLL_S = 0.5
MAX_SESSIONS_PER_ROUND = 200
MAX_SHARDS_PER_ROUND = 16
MAX_FILES_PER_ROUND = 500
REQUESTS_DIR = "requests"
QUARANTINE_DIR = "quarantine"
LOGS_DIR = "logs"


@dataclass(frozen=True, slots=True)
class Policy:
    retention_days: float = 0.0
    recording_retention_days: float = 0.0
    quarantine_retention_days: float = 0.0

    @classmethod
    def of(cls, config: Config) -> Policy:
        return cls(
            config.retention_days,
            config.recording_retention_days,
            config.quarantine_retention_days,
        )


@dataclass
class Round:
    """One round's plan and, unless it was a dry run, what it removed."""

    sessions: list[str] = field(default_factory=list)
    casts: list[str] = field(default_factory=list)  # file names under casts/
    quarantine: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # raw logs of pruned sessions
    held: list[str] = field(default_factory=list)  # would go, but are held
    more: bool = False  # the bounds left work for the next round
    result: PruneResult | None = None

    def summary(self) -> dict[str, Any]:
        removed = self.result.removed if self.result is not None else None
        return {
            "sessions": self.sessions,
            "commands": removed.commands if removed else 0,
            "links": len(removed.links) if removed else 0,
            "unchained": removed.unchained if removed else 0,
            "casts": self.casts,
            "quarantine": self.quarantine,
            "held": self.held,
        }


def plan_round(store: Store, data_dir: Path, policy: Policy, now: float) -> Round:
    """What a round would remove now, within its bounds, holds respected."""
    plan = Round()
    holds = read_holds(data_dir)
    shards: set[str] = set()
    cast_names: set[str] = set()
    if policy.retention_days:
        cutoff = now - policy.retention_days * DAY_S
        old = sorted(
            (s.ended_at or s.started_at, s.id, s)
            for s in store.sessions()
            if s.status not in KEPT_STATUSES and (s.ended_at or s.started_at) < cutoff
        )
        for _, sid, session in old:
            hold = _holding(holds, session)
            if hold is not None:
                plan.held.append(f"{sid} ({hold.name})")
                continue
            theirs = store.shards_holding(sid)
            if plan.sessions and (
                len(plan.sessions) >= MAX_SESSIONS_PER_ROUND
                or len(shards | theirs) > MAX_SHARDS_PER_ROUND
            ):
                plan.more = True
                break
            plan.sessions.append(sid)
            shards |= theirs
            log_name = session.log
            if "/" not in log_name and (data_dir / LOGS_DIR / log_name).is_file():
                plan.logs.append(log_name)
            for path in _cast_files(data_dir, sid):
                cast_names.add(path.name)
    if policy.recording_retention_days:
        cutoff = now - policy.recording_retention_days * DAY_S
        for session in store.sessions():
            if (
                session.status not in KEPT_STATUSES
                and (session.ended_at or session.started_at) < cutoff
                and _holding(holds, session) is None
            ):
                for path in _cast_files(data_dir, session.id):
                    cast_names.add(path.name)
    plan.casts = sorted(cast_names)[:MAX_FILES_PER_ROUND]
    plan.more |= len(cast_names) > MAX_FILES_PER_ROUND
    if policy.quarantine_retention_days:
        cutoff = now - policy.quarantine_retention_days * DAY_S
        old_files = []
        try:
            with os.scandir(data_dir / QUARANTINE_DIR) as entries:
                for entry in entries:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        old_files.append(entry.name)
        except FileNotFoundError:
            pass
        plan.quarantine = sorted(old_files)[:MAX_FILES_PER_ROUND]
        plan.more |= len(old_files) > MAX_FILES_PER_ROUND
    return plan


def _holding(holds: tuple[Hold, ...], session: Any) -> Hold | None:
    return next((h for h in holds if h.covers(session)), None)


def _cast_files(data_dir: Path, sid: str) -> list[Path]:
    cast = cast_path(data_dir, sid)
    state = cast.with_name(f"{sid}{STATE_SUFFIX}")
    return [p for p in (cast, state) if p.exists()]


def run_round(
    store: Store,
    data_dir: Path,
    policy: Policy,
    *,
    by: str,
    reason: str,
    dry_run: bool = False,
) -> Round:
    """Plan a round and carry it out: the store first, then the files."""
    with holds_locked(data_dir, exclusive=False):
        plan = plan_round(store, data_dir, policy, time.time())
        if not (plan.sessions or plan.casts or plan.quarantine):
            return plan
        plan.result = store.prune(
            plan.sessions,
            by=by,
            reason=reason,
            casts=plan.casts,
            quarantine=plan.quarantine,
            dry_run=dry_run,
        )
        if dry_run:
            return plan
        # The record is durable: the files it names may go.
        for name in plan.casts:
            _unlink(data_dir / CASTS_DIR / name)
        for name in plan.quarantine:
            _unlink(data_dir / QUARANTINE_DIR / name)
        for name in plan.logs:  # else a restart would read the session back in
            _unlink(data_dir / LOGS_DIR / name)
    return plan


def prune_all(
    store: Store,
    data_dir: Path,
    policy: Policy,
    *,
    by: str,
    dry_run: bool,
    stop: Callable[[], bool] = lambda: False,
) -> Round:
    """Rounds until nothing is left to prune (a dry run: one plan, unbounded)."""
    total = Round()
    while not stop():
        done = run_round(
            store, data_dir, policy, by=by, reason="request", dry_run=dry_run
        )
        total.sessions += done.sessions
        total.casts += done.casts
        total.quarantine += done.quarantine
        total.logs += done.logs
        total.held = done.held
        if done.result is not None:
            if total.result is None:
                total.result = done.result
            else:
                total.result.removed.add(done.result.removed)
        if dry_run or not done.more:
            break
    return total


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True, slots=True)
class RetentionSnapshot:
    last_round_at: float | None
    pruned_sessions: int  # since the agent started
    errors: int
    last_error: str | None


class Retention:
    """The thread that enforces retention and answers `audit-agent prune`."""

    def __init__(self, store: Store, data_dir: Path, policy: Policy) -> None:
        self.store = store
        self.data_dir = data_dir
        self.policy = policy
        self.requests = data_dir / REQUESTS_DIR
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_round = time.monotonic() + FIRST_ROUND_DELAY_S
        self.last_round_at: float | None = None
        self.pruned_sessions = 0
        self.errors = 0
        self.last_error: str | None = None

    def __enter__(self) -> Retention:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(REQUEST_POLL_S):
            self._answer_requests()
            if time.monotonic() >= self._next_round:
                more = self._round()
                interval = BUSY_ROUND_INTERVAL_S if more else ROUND_INTERVAL_S
                self._next_round = time.monotonic() + interval

    def _round(self) -> bool:
        if not (
            self.policy.retention_days
            or self.policy.recording_retention_days
            or self.policy.quarantine_retention_days
        ):
            return False
        try:
            done = run_round(
                self.store,
                self.data_dir,
                self.policy,
                by="audit-agent (retention)",
                reason="retention",
            )
        except (AgentError, OSError) as e:
            self._failed(f"retention round failed: {e}")
            return False
        self.last_round_at = time.time()
        if done.sessions or done.casts or done.quarantine:
            self.pruned_sessions += len(done.sessions)
            s = done.summary()
            log.info(
                "retention: pruned %d sessions (%d commands), %d recording files, "
                "%d quarantined files",
                len(done.sessions),
                s["commands"],
                len(done.casts),
                len(done.quarantine),
            )
        return done.more

    def _failed(self, why: str) -> None:
        self.errors += 1
        self.last_error = why
        log.error("%s", why)

    def _answer_requests(self) -> None:
        try:
            names = sorted(os.listdir(self.requests))
        except OSError:
            return
        for name in names:
            if not (name.startswith("prune-") and name.endswith(".json")):
                continue
            if name.endswith(".result.json"):
                continue
            path = self.requests / name
            answer = self._answer(path)
            result = path.with_name(name[: -len(".json")] + ".result.json")
            try:
                write_atomic(result, json.dumps(answer).encode("utf-8"))
                os.unlink(path)
            except OSError as e:
                self._failed(f"cannot answer {path}: {e.strerror}")

    def _answer(self, path: Path) -> dict[str, Any]:
        try:
            request = json.loads(path.read_bytes())
            dry_run = bool(request.get("dry_run"))
            by = str(request.get("by") or "audit-agent prune")
            done = prune_all(
                self.store,
                self.data_dir,
                self.policy,
                by=by,
                dry_run=dry_run,
                stop=self._stop.is_set,
            )
        except (AgentError, OSError, ValueError, AttributeError) as e:
            self._failed(f"prune request {path.name} failed: {e}")
            return {"ok": False, "error": str(e)}
        if not dry_run:
            self.pruned_sessions += len(done.sessions)
        return {
            "ok": True,
            "dry_run": dry_run,
            "at": iso(time.time()),
            **done.summary(),
        }

    def snapshot(self) -> RetentionSnapshot:
        return RetentionSnapshot(
            self.last_round_at, self.pruned_sessions, self.errors, self.last_error
        )
