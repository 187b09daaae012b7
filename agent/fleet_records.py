"""The fleet store's rows as the records every reader returns (pure).

What the fleet reader (agent/fleet_reader.py) gives is what the local reader
gives, built by the same records (Session.from_document,
Command.from_document) from the columns the shipper filled
(agent/daemon/fleet_rows.py), plus each session's `bastion`; and the sample
of the commands that pg_stats keeps, for a regex's index probe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.access_log import AccessEntry
from agent.fleet_queries import SESSION_COLUMNS
from agent.records import Command, Session
from agent.regex_prefilter import Sample


def iso_of(dt: datetime) -> str:
    """A timestamptz as the store writes times: milliseconds and Z."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_SESSION_NAMES = [n.strip() for n in SESSION_COLUMNS.split(",")]


def session_of(row: tuple[Any, ...]) -> Session:
    values = dict(zip(_SESSION_NAMES, row, strict=True))
    doc = {k: v for k, v in values.items() if k not in ("extra", "start_ticks")}
    for key in ("started_at", "ended_at"):
        if doc[key] is not None:
            doc[key] = iso_of(doc[key])
    doc.update(values["extra"] or {})
    doc["_ingest"] = {"start_ticks": values["start_ticks"]}
    return Session.from_document(doc)


def command_of(row: tuple[Any, ...]) -> Command:
    session, seq, time, command, cancelled, kind, program, hash_, extra, _ = row
    doc: dict[str, Any] = {
        "session": session,
        "seq": seq,
        "time": iso_of(time),
        "command": command,
    }
    if cancelled:
        doc["cancelled"] = True
    doc["kind"] = kind
    for key, value in (("program", program), ("hash", hash_)):
        if value is not None:
            doc[key] = value
    doc.update(extra or {})
    return Command.from_document(doc)


def sample_of(row: tuple[Any, ...] | None) -> Sample | None:
    """The commands' sample, from AUDITOR_SAMPLE_SQL's row; None before an ANALYZE."""
    if row is None:
        return None
    common_values, common_shares, null_share, others = row
    common = tuple(zip(common_values or (), common_shares or (), strict=True))
    if not common and not others:
        return None
    rest = 1.0 - null_share - sum(f for _, f in common)
    return Sample(common, tuple(others or ()), max(rest, 0.0))


def access_of(row: tuple[Any, ...]) -> AccessEntry:
    """An access_log row (agent/daemon/fleet_rows.py wrote it) as its entry."""
    bastion, seq, time, actor, action, target, detail = row
    doc = {**(detail or {}), "seq": seq, "time": iso_of(time), "actor": actor}
    doc.update(action=action, session=target, bastion=bastion)
    return AccessEntry.from_document(doc)
