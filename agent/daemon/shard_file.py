"""The shard files the writer writes: whole, atomically, in the store's mode.

TinyDB's JSONStorage truncates and rewrites the file in place on every
write, so a crash in between loses the database: the newest shard is kept in
memory here and replaced whole on flush; a sealed shard a prune rewrites is
replaced the same way.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from agent.access_log import ACCESS
from agent.chain import SESSION
from agent.chain import record_fields as chained_fields
from agent.files import PRIVATE_FILE_MODE, write_atomic
from agent.shards import COMMANDS, SESSIONS


class AtomicJSONStorage(Storage):
    """TinyDB storage kept in memory and written whole only on flush().

    TinyDB's JSONStorage truncates and rewrites the file in place on every
    write: a crash in between loses the database. Here TinyDB's writes only
    touch memory, and flush() replaces the file atomically. Each document's
    JSON is kept from one flush to the next: tables only grow at their end
    (TinyDB numbers documents in order), and the writer says which documents
    it changed in place (`changed`), so a flush encodes what changed, plus
    one copy; a table that lost documents (a prune) is encoded anew.
    """

    def __init__(
        self,
        path: Path,
        data: dict[str, Any] | None = None,
        mode: int = PRIVATE_FILE_MODE,
    ) -> None:
        self.path = path
        self.mode = mode
        self._data: dict[str, Any] = data if data is not None else {}
        self.dirty = data is None
        # Bytes of the version on disk: the writer seals a shard by size too.
        self.size = path.stat().st_size if data is not None and path.exists() else 0
        self._docs: dict[str, dict[str, str]] = {}  # table -> doc id -> its member
        self._changed: dict[str, set[str]] = {}  # docs changed in place since

    def read(self) -> dict[str, Any]:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self.dirty = True

    def changed(self, table: str, doc_id: int) -> None:
        """The writer changed this document in place (an update, not an insert)."""
        self._changed.setdefault(table, set()).add(str(doc_id))

    def flush(self) -> None:
        if self.dirty:
            parts = [
                f"{_dumps(name)}:{self._table(name, table)}"
                for name, table in self._data.items()
            ]
            data = ("{" + ",".join(parts) + "}").encode("utf-8")
            write_atomic(self.path, data, self.mode)
            self.size = len(data)
            self._changed.clear()
            self.dirty = False

    def _table(self, name: str, table: dict[str, Any]) -> str:
        cache = self._docs.get(name)
        done = len(cache) if cache is not None else 0
        if cache is None or not (
            done <= len(table)
            and (
                not done
                or next(itertools.islice(table, done - 1, None)) == _last(cache)
            )
            and cache.keys() <= table.keys()
        ):
            # Documents went, or came elsewhere than at the end: all anew.
            cache = self._docs[name] = {k: _member(k, v) for k, v in table.items()}
        else:
            for key in itertools.islice(table, done, None):
                cache[key] = _member(key, table[key])
            for key in self._changed.get(name, ()):
                cache[key] = _member(key, table[key])
        return "{" + ",".join(cache.values()) + "}"

    def close(self) -> None:
        pass


class NewestShard:
    """The shard the writer writes: its TinyDB, and what the writer knows of it."""

    def __init__(
        self, path: Path, tables: dict[str, dict[str, Any]] | None, mode: int
    ) -> None:
        self.db = TinyDB(path, storage=AtomicJSONStorage, data=tables, mode=mode)
        self.storage: AtomicJSONStorage = self.db.storage  # type: ignore[assignment]
        self.doc_ids: dict[str, int] = {}  # session id -> its document's id here
        # session id -> the chained fields of its document here
        self.linked: dict[str, dict[str, Any]] = {}
        self.entries = 0  # commands and access-log entries: both seal it
        if tables is None:
            return
        for doc_id, doc in tables.get(SESSIONS, {}).items():
            sid = str(doc.get("id"))
            self.doc_ids[sid] = int(doc_id)
            if "_chain" in doc:
                self.linked[sid] = chained_fields(SESSION, doc)
            else:  # stored before the chain: its next state is a new link
                self.linked.pop(sid, None)
        self.entries = len(tables.get(COMMANDS, {})) + len(tables.get(ACCESS, {}))

    @property
    def path(self) -> Path:
        return self.storage.path


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _member(key: str, doc: Any) -> str:
    """`"key":{doc}`, one member of a table's JSON object."""
    return f"{_dumps(key)}:{_dumps(doc)}"


def _last(cache: dict[str, str]) -> str:
    return next(reversed(cache))


def write_shard(path: Path, tables: Mapping[str, Any], mode: int) -> None:
    """Replace a (sealed) shard's file with these tables."""
    text = json.dumps(tables, ensure_ascii=False, separators=(",", ":"))
    write_atomic(path, text.encode("utf-8"), mode)
