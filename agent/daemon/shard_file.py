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

from tinydb.storages import Storage

from agent.files import PRIVATE_FILE_MODE, write_atomic


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
            text = "{" + ",".join(parts) + "}"
            write_atomic(self.path, text.encode("utf-8"), self.mode)
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
