"""Reading the store for the operators' tools: a snapshot, or a live follow.

Readers never write and never lock: each shard is replaced atomically by the
agent, so opening it gives one whole version. A shard that cannot be read is
named in `errors` and the rest is still returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.access_log import ACCESS, AccessEntry
from agent.records import Command, RecordError, Session
from agent.shards import COMMANDS, StoreError, iter_sessions, list_shards, read_shard


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
