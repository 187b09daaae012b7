"""Reading the store for the operators' tools: a snapshot, a scan, or a live follow.

Readers never write and never lock: each shard is replaced atomically by the
agent, so opening it gives one whole version. A shard that cannot be read is
named in `errors` and the rest is still returned.

`scan()` is the export's way, for stores of millions of commands: every
session first, from each shard's sessions table alone, then the commands one
shard at a time, checked but not turned into records, so that memory and the
cost per command stay flat however large the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.access_log import ACCESS, AccessEntry
from agent.chain import CHAIN_KEY
from agent.records import (
    PLAIN_FIELDS,
    Command,
    CommandDocument,
    RecordError,
    Session,
    checked_command,
)
from agent.shards import (
    COMMANDS,
    StoreError,
    iter_sessions,
    list_shards,
    read_sessions,
    read_shard,
)


@dataclass
class Snapshot:
    sessions: dict[str, Session] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    access: list[AccessEntry] = field(default_factory=list)  # in seq order


def check_data_dir(data_dir: Path) -> Path:
    """The store directory of `data_dir`; StoreError if it cannot be read."""
    store_dir = data_dir / "store"
    try:
        os.listdir(data_dir)
        if store_dir.exists():
            os.listdir(store_dir)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise StoreError(f"no such data directory: {data_dir}") from e
    except PermissionError as e:
        raise StoreError(
            f"cannot read data directory {data_dir}: permission denied (it is root's)"
        ) from e
    return store_dir


def _commands(
    tables: dict[str, dict[str, Any]], path: Path
) -> Iterator[tuple[int, Command]]:
    for doc_id, doc in tables.get(COMMANDS, {}).items():
        try:
            yield int(doc_id), Command.from_document(doc)
        except (RecordError, ValueError) as e:  # ValueError: a doc id not a number
            raise StoreError(f"corrupt shard {path}: {e}") from e


def access_entries(tables: dict[str, dict[str, Any]], path: Path) -> list[AccessEntry]:
    """A shard's access-log entries (agent/access_log.py), in write order."""
    try:
        return [AccessEntry.from_document(d) for d in tables.get(ACCESS, {}).values()]
    except RecordError as e:
        raise StoreError(f"corrupt shard {path}: {e}") from e


def load(
    data_dir: Path, progress: Callable[[int, int], None] | None = None
) -> Snapshot:
    """Every session (newest document wins) and every command, in write order.

    `progress(done, total)` is told how many shards are read, as it goes.
    """
    snapshot = Snapshot()
    shards = list_shards(check_data_dir(data_dir))
    for done, path in enumerate(shards):
        if progress is not None:
            progress(done, len(shards))
        try:
            tables = read_shard(path)
            sessions = list(iter_sessions(tables, path))
            # TinyDB writes a table in insertion order, which is ours.
            commands = [c for _, c in _commands(tables, path)]
            access = access_entries(tables, path)
        except StoreError as e:
            snapshot.errors.append(str(e))
            continue
        for session in sessions:
            snapshot.sessions[session.id] = session
        snapshot.commands.extend(commands)
        snapshot.access.extend(access)
    if progress is not None:
        progress(len(shards), len(shards))
    return snapshot


def _commands_of(
    tables: dict[str, dict[str, Any]], path: Path
) -> list[CommandDocument]:
    """A shard's command documents in write order, their types checked."""
    docs = list(tables.get(COMMANDS, {}).values())
    # checked_command's test for a plain command, inline: a function call per
    # document would be a third of an export's time. Only the others (a
    # transfer, an input, an action ...) are checked one by one.
    plain = [
        type(d) is dict
        and len(d) - ("cancelled" in d) - (CHAIN_KEY in d) == PLAIN_FIELDS
        and type(d.get("seq")) is int
        and type(d.get("session")) is str
        and type(d.get("time")) is str
        and type(d.get("command")) is str
        for d in docs
    ]
    if all(plain):
        return docs  # commands only: the common case, checked at C speed
    try:
        for doc, ok in zip(docs, plain, strict=True):
            if not ok:
                checked_command(doc)
    except RecordError as e:
        raise StoreError(f"corrupt shard {path}: {e}") from e
    return docs


def _signature(path: Path) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise StoreError(f"cannot read shard {path}: {e.strerror}") from e
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class StoreScan:
    """Every session of the store (newest document wins); the commands on demand."""

    shards: dict[Path, tuple[int, int, int]] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def commands(self) -> Iterator[list[CommandDocument]]:
        """Each shard's commands in turn; a shard that cannot be read is named.

        A shard the agent rewrote since its sessions were read (the newest)
        may hold new sessions: those join; the others stay as first read, so
        that every command of a session carries the same session fields.
        """
        for path, signature in self.shards.items():
            try:
                rewritten = _signature(path) != signature
                tables = read_shard(path)
                if rewritten:
                    for session in iter_sessions(tables, path):
                        self.sessions.setdefault(session.id, session)
                yield _commands_of(tables, path)
            except StoreError as e:
                self.errors.append(str(e))


def scan(
    data_dir: Path, progress: Callable[[int, int], None] | None = None
) -> StoreScan:
    """The sessions of every shard; `progress(done, total)` as shards are read."""
    shards = list_shards(check_data_dir(data_dir))
    result = StoreScan()
    for done, path in enumerate(shards):
        if progress is not None:
            progress(done, len(shards))
        try:
            signature = _signature(path)
            sessions = read_sessions(path)
        except StoreError as e:
            result.errors.append(str(e))
            continue
        result.shards[path] = signature
        for session in sessions:
            result.sessions[session.id] = session
    if progress is not None:
        progress(len(shards), len(shards))
    return result


@dataclass
class _ShardState:
    signature: tuple[int, int, int] | None = None  # inode, size, mtime_ns
    last_doc_id: int = 0


class StoreFollower:
    """Yields commands as the agent stores them (for audit-tail)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.sessions: dict[str, Session] = {}
        self.errors: list[str] = []
        self._shards: dict[Path, _ShardState] = {}

    def poll(self) -> list[Command]:
        """Commands stored since the last poll, in the order they were stored."""
        store_dir = self.data_dir / "store"
        new: list[Command] = []
        for path in list_shards(store_dir):
            state = self._shards.setdefault(path, _ShardState())
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == state.signature:
                continue
            try:
                tables = read_shard(path)
                sessions = list(iter_sessions(tables, path))
                commands = list(_commands(tables, path))
            except StoreError as e:
                if not path.exists():
                    continue  # moved to quarantine between listing and reading
                if state.signature is None or str(e) not in self.errors:
                    self.errors.append(str(e))
                state.signature = signature
                continue
            state.signature = signature
            for session in sessions:
                self.sessions[session.id] = session
            for doc_id, command in commands:
                if doc_id > state.last_doc_id:
                    new.append(command)
                    state.last_doc_id = doc_id
        return new
