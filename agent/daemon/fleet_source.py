"""What the shipper reads: the local store's shards, and where it got to.

The local store stays the record and the fleet's outbox. The position is
(shard number, command doc id): every command before it, and every session
state of the shards before its shard, is in the fleet store. It is kept in
DATA_DIR/fleet.cursor.json, replaced atomically after each commit in the
fleet store (agent/files.py), as the store keeps its shards. A crash between
the commit and the save ships that batch again, which the fleet's keys make
harmless; a cursor that is lost or unreadable ships everything again.

`ahead` holds sessions whose newest commands went out before the backlog
reached them (the live lane: a long backlog must not hold up live sessions),
with the last seq shipped, so the backlog lane skips them later.

Access-log entries (agent/access_log.py) are numbered across the store and
written in that order, so `access` (the last number shipped) is their
position; they go out with the backlog lane, a shard's before the next. A
cursor of version 1 (an agent that shipped no access log) starts again at
the first shard, which ships the entries and writes nothing else twice.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.access_log import ACCESS, AccessEntry
from agent.daemon.fleet_rows import SessionState
from agent.files import write_atomic
from agent.records import Command, RecordError
from agent.shards import COMMANDS, StoreError, iter_sessions, list_shards, read_shard

log = logging.getLogger(__name__)

CURSOR_FILE = "fleet.cursor.json"
CURSOR_VERSION = 2  # 2: with the access log's position


@dataclass
class Cursor:
    shard: int = 0  # the shard being shipped (0: none yet)
    doc: int = 0  # its commands up to this doc id are shipped
    ahead: dict[str, int] = field(default_factory=dict)  # session -> seq shipped
    casts: dict[str, int] = field(default_factory=dict)  # session -> bytes shipped
    access: int = 0  # access-log entries up to this seq are shipped

    @classmethod
    def load(cls, path: Path, bastion: str) -> Cursor:
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            if doc.get("bastion") != bastion:
                log.warning(
                    "fleet: %s is for bastion %r, not %r: shipping everything again",
                    path,
                    doc.get("bastion"),
                    bastion,
                )
                return cls()
            cursor = cls(
                shard=int(doc["shard"]),
                doc=int(doc["doc"]),
                ahead={str(k): int(v) for k, v in doc.get("ahead", {}).items()},
                casts={str(k): int(v) for k, v in doc.get("casts", {}).items()},
                access=int(doc.get("access", 0)),
            )
            if int(doc.get("v", 1)) < CURSOR_VERSION and cursor.shard > 1:
                log.info(
                    "fleet: %s is from before the access log was shipped: "
                    "shipping the store again (nothing is written twice)",
                    path,
                )
                cursor.shard, cursor.doc = 0, 0
            return cursor
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.error(
                "fleet: cursor %s is unreadable (%s); shipping everything", path, e
            )
            return cls()

    def save(self, path: Path, bastion: str) -> None:
        text = json.dumps(
            {
                "v": CURSOR_VERSION,
                "bastion": bastion,
                "shard": self.shard,
                "doc": self.doc,
                "ahead": self.ahead,
                "casts": self.casts,
                "access": self.access,
            },
            separators=(",", ":"),
        )
        write_atomic(path, text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ShardContent:
    """One version of one shard: its session states and its commands, in order."""

    number: int
    signature: tuple[int, int, int]  # inode, size, mtime_ns
    sessions: dict[str, SessionState]
    commands: tuple[tuple[int, Command], ...]  # (doc id, command), write order
    count: int  # commands in the shard, those before `after` included
    after: int  # commands up to this doc id were left out
    access: tuple[AccessEntry, ...] = ()  # its access-log entries past access_after
    access_after: int = 0  # entries up to this seq were left out


def shard_number(path: Path) -> int:
    return int(path.stem)


def signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_content(
    path: Path, after: int = 0, access_after: int = 0
) -> ShardContent | None:
    """The shard as it is now, its commands past doc id `after` and access-log
    entries past seq `access_after`; None if it went.

    Only the records not shipped yet are built: the newest shard is read
    again after every flush, and most of it went out already.

    StoreError for a shard that cannot be read: the caller skips it, as the
    readers do, and the agent quarantines it.
    """
    sig = signature(path)
    if sig is None:
        return None
    try:
        tables = read_shard(path)
    except StoreError:
        if not path.exists():
            return None
        raise
    number = shard_number(path)
    sessions = {
        s.id: SessionState(s, number, sig[2]) for s in iter_sessions(tables, path)
    }
    commands = []
    table = tables.get(COMMANDS, {})
    for doc_id, doc in table.items():
        try:
            n = int(doc_id)
            if n > after:
                commands.append((n, Command.from_document(doc)))
        except (RecordError, ValueError) as e:
            raise StoreError(f"corrupt shard {path}: {e}") from e
    access = []
    for doc in tables.get(ACCESS, {}).values():
        try:
            if int(doc["seq"]) > access_after:
                access.append(AccessEntry.from_document(doc))
        except (RecordError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"corrupt shard {path}: {e}") from e
    return ShardContent(
        number,
        sig,
        sessions,
        tuple(commands),
        len(table),
        after,
        tuple(access),
        access_after,
    )


def shards_from(store_dir: Path, number: int) -> list[Path]:
    """The shards at or after `number`, in write order."""
    return [p for p in list_shards(store_dir) if shard_number(p) >= number]


class ShardCounts:
    """How many commands each shard holds; a sealed shard is read only once."""

    def __init__(self) -> None:
        self._counts: dict[Path, tuple[tuple[int, int, int], int]] = {}

    def count(self, path: Path) -> int:
        sig = signature(path)
        if sig is None:
            return 0
        known = self._counts.get(path)
        if known is not None and known[0] == sig:
            return known[1]
        try:
            n = len(read_shard(path).get(COMMANDS, {}))
        except StoreError:
            n = 0
        self._counts[path] = (sig, n)
        return n

    def forget_before(self, number: int) -> None:
        for path in [p for p in self._counts if shard_number(p) < number]:
            del self._counts[path]
