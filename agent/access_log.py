"""The access log: who viewed, replayed, exported, searched or terminated what.

audit-web never writes the store: it asks the daemon (agent/control.py) to
append each entry, and the daemon's store writer keeps them in the shards'
`access` table, numbered by `seq` across the whole store, in the same atomic
writes as the sessions and commands. Readers (the console, the fleet events)
read them back from there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.records import RecordError

ACCESS = "access"  # the shards' table
DETAIL_MAX_CHARS = 500
NAME_MAX_CHARS = 64


class Action(enum.StrEnum):
    VIEW = "view"  # a session's page
    REPLAY = "replay"  # its recording, played in the console (or live)
    EXPORT = "export"  # a download: cast, commands, search result
    SEARCH = "search"  # a command search or a filtered session list
    TERMINATE = "terminate"  # a live session cut by an auditor
    UNLOCK = "unlock"  # a bastion user a lock rule locked, let in again
    ACCESS_LOG = "access-log"  # the access log itself, read


@dataclass(frozen=True, slots=True)
class AccessEntry:
    seq: int  # 1, 2, 3 ... across the store; 0 until the daemon numbers it
    time: str  # iso(), the daemon's clock
    actor: str  # the signed-in web user
    role: str  # "auditor" or "user"
    action: Action
    session: str | None = None  # Session.id, when the action is about one
    detail: str = ""  # the query, the format, the reason, the outcome
    client: str = ""  # the browser's address as audit-web saw it
    ok: bool = True  # False: asked for and refused (a terminate of an ended session)
    # The bastion that logged it, for an entry read from the fleet store
    # (agent/fleet_reader.py); None in the local store, which is one bastion's.
    bastion: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "role": self.role,
            "action": self.action.value,
            "session": self.session,
            "detail": self.detail,
            "client": self.client,
            "ok": self.ok,
            **({"bastion": self.bastion} if self.bastion is not None else {}),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AccessEntry:
        try:
            session = doc.get("session")
            return cls(
                seq=int(doc["seq"]),
                time=str(doc["time"]),
                actor=str(doc["actor"]),
                role=str(doc.get("role") or ""),
                action=Action(doc["action"]),
                session=str(session) if session is not None else None,
                detail=str(doc.get("detail") or ""),
                client=str(doc.get("client") or ""),
                ok=doc.get("ok") is not False,
                bastion=str(doc["bastion"]) if doc.get("bastion") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad access document: {e}") from e


def clipped(text: Any, limit: int = DETAIL_MAX_CHARS) -> str:
    """A field as the log keeps it: text, at most `limit` characters."""
    return str(text if text is not None else "")[:limit]


def stored_state(tables: Mapping[str, Any]) -> tuple[int, dict[str, AccessEntry]]:
    """A shard's highest entry number, and the sessions it says were terminated."""
    last, terminated = 0, {}
    for doc in tables.get(ACCESS, {}).values():
        seq = doc.get("seq") if isinstance(doc, dict) else None
        if isinstance(seq, int):
            last = max(last, seq)
        if isinstance(doc, dict) and doc.get("action") == Action.TERMINATE:
            try:
                entry = AccessEntry.from_document(doc)
            except RecordError:
                continue
            if entry.ok and entry.session is not None:
                terminated[entry.session] = entry
    return last, terminated
