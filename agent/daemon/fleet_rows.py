"""Writing one bastion's records into the fleet store, idempotently.

Every write is keyed (bastion, session id[, seq or chunk]) and says what to do
when the key is there already, so a batch shipped again after a crash, a cut
connection or an aborted transaction writes nothing twice: a command that is
there is left alone, a session's state replaces the stored one only if it is
not older (its shard number and shard mtime), a recording chunk only if it
holds more of the cast, an access-log entry that is there is left alone.
The caller runs them in one transaction.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent import AgentError
from agent.access_log import AccessEntry
from agent.records import Command, Session, iso

CAST_CHUNK_BYTES = 256 << 10  # of the cast, before compression
# Columns of `sessions` and `commands` (agent/fleet_schema.py) that a
# document's fields go to; any other field goes to `extra`.
SESSION_COLUMNS = (
    "id",
    "tag",
    "bastion_user",
    "remote_user",
    "host",
    "port",
    "ssh_pid",
    "tty",
    "started_at",
    "ended_at",
    "status",
    "end_reason",
    "command_count",
    "gaps",
    "remote_command",
    "origin",
    "client_addr",
    "inventory_host",
    "remote_account",
    "recorder",
    "hash",
)
COMMAND_COLUMNS = ("session", "seq", "time", "command", "cancelled", "kind", "program")
_COMMAND_KNOWN = frozenset((*COMMAND_COLUMNS, "hash"))


class ConflictError(AgentError):
    """The fleet store holds another session under this bastion's id and key."""


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session's document as one shard holds it, and which shard version."""

    session: Session
    shard: int
    mtime_ns: int


def _session_params(bastion: str, state: SessionState) -> list[Any]:
    doc = state.session.public_fields()
    extra = {k: v for k, v in doc.items() if k not in SESSION_COLUMNS}
    values: list[Any] = [bastion]
    for column in SESSION_COLUMNS:
        value = doc.get(column)
        values.append(json.dumps(value) if column == "gaps" else value)
    values += [
        state.session.start_ticks,
        json.dumps(extra, ensure_ascii=False) if extra else None,
        state.shard,
        state.mtime_ns,
    ]
    return values


_SESSION_INSERT_COLUMNS = ("bastion", *SESSION_COLUMNS, "start_ticks", "extra")
_UPSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(_SESSION_INSERT_COLUMNS)},"
    " state_shard, state_mtime_ns)"
    f" VALUES ({', '.join(['%s'] * (len(_SESSION_INSERT_COLUMNS) + 2))})"
    " ON CONFLICT (bastion, id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in (*_SESSION_INSERT_COLUMNS[2:], "state_shard", "state_mtime_ns")
    )
    + ", received_at = now()"
    " WHERE (sessions.state_shard, sessions.state_mtime_ns)"
    " <= (excluded.state_shard, excluded.state_mtime_ns)"
)


def check_identities(
    cur: Any, bastion: str, states: Sequence[SessionState], verified: set[str]
) -> None:
    """ConflictError if a stored session of this key is another ssh's.

    Two agents shipping as one bastion id both have a session `t1`: the key
    is the same, the ssh behind it is not. A connection record's session has
    no ssh yet (pid 0) and takes one when its ssh appears: no conflict.
    """
    todo = {s.session.id: s.session for s in states if s.session.id not in verified}
    if not todo:
        return
    cur.execute(
        "SELECT id, ssh_pid, start_ticks, started_at FROM sessions"
        " WHERE bastion = %s AND id = ANY(%s)",
        (bastion, list(todo)),
    )
    for sid, ssh_pid, start_ticks, started_at in cur.fetchall():
        mine = todo[sid]
        if ssh_pid and mine.ssh_pid and (ssh_pid, start_ticks) != mine.identity:
            raise ConflictError(
                f"session {sid!r} of bastion {bastion!r} in the fleet store is "
                f"another session (ssh pid {ssh_pid}, started "
                f"{iso(started_at.timestamp())}; here ssh pid {mine.ssh_pid}, started "
                f"{iso(mine.started_at)}): do two agents ship as bastion {bastion!r}?"
            )
    verified.update(todo)


def upsert_sessions(cur: Any, bastion: str, states: Iterable[SessionState]) -> int:
    params = [_session_params(bastion, s) for s in states]
    if params:
        cur.executemany(_UPSERT_SESSION, params)
    return len(params)


def insert_commands(cur: Any, bastion: str, commands: Sequence[Command]) -> int:
    """Every command not there yet, in one statement (one notification each)."""
    if not commands:
        return 0
    columns: list[list[Any]] = [[] for _ in range(len(COMMAND_COLUMNS) + 2)]
    for command in commands:
        doc = command.to_document()
        row = (
            command.session,
            command.seq,
            command.time,
            command.command,
            command.cancelled,
            doc.get("kind") or "command",
            doc.get("program"),
            doc.get("hash"),
            _extra(doc),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    cur.execute(
        "INSERT INTO commands (bastion, session, seq, time, command, cancelled,"
        " kind, program, hash, extra)"
        " SELECT %s, * FROM unnest(%s::text[], %s::integer[], %s::timestamptz[],"
        " %s::text[], %s::boolean[], %s::text[], %s::text[], %s::text[],"
        " %s::jsonb[])"
        " ON CONFLICT (bastion, session, seq) DO NOTHING",
        (bastion, *columns),
    )
    return len(commands)


def insert_access(cur: Any, bastion: str, entries: Sequence[AccessEntry]) -> int:
    """Every access-log entry not there yet, keyed (bastion, seq).

    The table's `target` is the entry's session; `detail` (jsonb) holds the
    rest of it: role, detail, client and ok.
    """
    if not entries:
        return 0
    rows = [
        (
            bastion,
            e.seq,
            e.time,
            e.actor,
            e.action.value,
            e.session,
            json.dumps(
                {"role": e.role, "detail": e.detail, "client": e.client, "ok": e.ok},
                ensure_ascii=False,
            ),
        )
        for e in entries
    ]
    cur.executemany(
        "INSERT INTO access_log (bastion, seq, time, actor, action, target, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (bastion, seq) DO NOTHING",
        rows,
    )
    return len(rows)


def _extra(doc: dict[str, Any]) -> str | None:
    extra = {k: v for k, v in doc.items() if k not in _COMMAND_KNOWN}
    return json.dumps(extra, ensure_ascii=False) if extra else None


def register_bastion(cur: Any, bastion: str, name: str) -> None:
    cur.execute(
        "INSERT INTO bastions (id, name) VALUES (%s, %s)"
        " ON CONFLICT (id) DO UPDATE SET last_seen = now(), name = excluded.name",
        (bastion, name),
    )


def shipped_seqs(cur: Any, bastion: str, ids: Sequence[str]) -> dict[str, int]:
    """The highest seq the fleet store holds of each session (0: none)."""
    cur.execute(
        "SELECT session, max(seq) FROM commands"
        " WHERE bastion = %s AND session = ANY(%s) GROUP BY session",
        (bastion, list(ids)),
    )
    found = {str(sid): int(seq) for sid, seq in cur.fetchall()}
    return {sid: found.get(sid, 0) for sid in ids}


def shipped_cast_bytes(cur: Any, bastion: str, session_id: str) -> int:
    cur.execute(
        "SELECT coalesce(sum(raw_bytes), 0) FROM recordings"
        " WHERE bastion = %s AND session = %s",
        (bastion, session_id),
    )
    return int(cur.fetchone()[0])


def upsert_cast(
    cur: Any, bastion: str, session_id: str, data: bytes, first_chunk: int
) -> None:
    """The cast's chunks from `first_chunk` on; `data` starts at that chunk."""
    params = []
    for i in range(0, len(data), CAST_CHUNK_BYTES):
        raw = data[i : i + CAST_CHUNK_BYTES]
        chunk = first_chunk + i // CAST_CHUNK_BYTES
        params.append((bastion, session_id, chunk, len(raw), zlib.compress(raw, 6)))
    if params:
        cur.executemany(
            "INSERT INTO recordings (bastion, session, chunk, raw_bytes, data)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (bastion, session, chunk) DO UPDATE"
            " SET raw_bytes = excluded.raw_bytes, data = excluded.data"
            " WHERE excluded.raw_bytes > recordings.raw_bytes",
            params,
        )
