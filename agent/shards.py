"""The store on disk: TinyDB shards, as the agent writes them and readers read them.

Layout (DATA_DIR/store, root only):
    00000001.json, 00000002.json, ...   TinyDB databases, tables `sessions`
                                        and `commands`

Only the newest shard is ever written, whole and atomically, by the agent's
store writer (agent/daemon/store.py); a session's document is written again
into the newest shard whenever it changes, and readers take the last one.
Reading needs no TinyDB: a shard is one JSON object of tables, each a map of
document ids to documents, in insertion order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.records import RecordError, Session

SHARD_RE = re.compile(r"(\d{8})\.json")
SESSIONS, COMMANDS = "sessions", "commands"
# The writer puts the sessions table first: it can be read without the rest.
_SESSIONS_FIRST = re.compile(r'\s*\{\s*"sessions"\s*:\s*')
_DECODER = json.JSONDecoder()


class StoreError(AgentError):
    """The store directory or one of its shards cannot be used."""


def list_shards(store_dir: Path) -> list[Path]:
    """Shard files in write order."""
    try:
        names = os.listdir(store_dir)
    except FileNotFoundError:
        return []
    return [store_dir / n for n in sorted(names) if SHARD_RE.fullmatch(n)]


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except OSError as e:
        raise StoreError(f"cannot read shard {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise StoreError(f"corrupt shard {path}: not JSON ({e})") from e


def read_shard(path: Path) -> dict[str, dict[str, Any]]:
    """The tables of one shard; StoreError names the shard if it is unusable."""
    return _read(path)[0]


def read_shard_digest(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """The tables of one shard, and the SHA-256 of its file."""
    tables, raw = _read(path)
    return tables, hashlib.sha256(raw).hexdigest()


def _read(path: Path) -> tuple[dict[str, dict[str, Any]], bytes]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = json.loads(raw)
    except OSError as e:
        raise StoreError(f"cannot read shard {path}: {e.strerror}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"corrupt shard {path}: not JSON ({e})") from e
    if not isinstance(data, dict) or not all(
        isinstance(t, dict) for t in data.values()
    ):
        raise StoreError(f"corrupt shard {path}: not a TinyDB database")
    return data, raw


def read_sessions(path: Path) -> list[Session]:
    """The sessions of one shard, decoding its sessions table only.

    A shard that does not begin with that table is decoded whole.
    """
    text = _read_text(path)
    head = _SESSIONS_FIRST.match(text)
    if head is None:
        return list(iter_sessions(read_shard(path), path))
    try:
        table, _ = _DECODER.raw_decode(text, head.end())
    except ValueError as e:
        raise StoreError(f"corrupt shard {path}: not JSON ({e})") from e
    if not isinstance(table, dict):
        raise StoreError(f"corrupt shard {path}: not a TinyDB database")
    return list(iter_sessions({SESSIONS: table}, path))


def iter_sessions(tables: dict[str, dict[str, Any]], path: Path) -> Iterator[Session]:
    for doc in tables.get(SESSIONS, {}).values():
        try:
            yield Session.from_document(doc)
        except RecordError as e:
            raise StoreError(f"corrupt shard {path}: {e}") from e
