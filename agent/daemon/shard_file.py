"""The shard files the writer writes: whole, atomically, in the store's mode.

TinyDB's JSONStorage truncates and rewrites the file in place on every
write, so a crash in between loses the database: the newest shard is kept in
memory here and replaced whole on flush; a sealed shard a prune rewrites is
replaced the same way.
"""

from __future__ import annotations

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
    touch memory, and flush() replaces the file atomically.
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

    def read(self) -> dict[str, Any]:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            text = json.dumps(self._data, ensure_ascii=False, separators=(",", ":"))
            write_atomic(self.path, text.encode("utf-8"), self.mode)
            self.dirty = False

    def close(self) -> None:
        pass


def write_shard(path: Path, tables: Mapping[str, Any], mode: int) -> None:
    """Replace a (sealed) shard's file with these tables."""
    text = json.dumps(tables, ensure_ascii=False, separators=(",", ":"))
    write_atomic(path, text.encode("utf-8"), mode)
