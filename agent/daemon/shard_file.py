"""The shard files the writer writes: whole, atomically, in the store's mode.

A shard is a TinyDB database (a JSON object of tables, each an object of
documents by id, numbered from 1 in write order), and stays one: TinyDB
opens it. But the writer does not write through TinyDB. Its JSONStorage
truncates and rewrites the file in place on every write, so a crash in
between loses the database; and its Table rebuilds the whole table's dict
twice at every insert or update (tinydb/table.py, `_update_table`: every key
through int() and back): 3.3 s of 8.7 s under cProfile for 4,000 flushes of
one command each into one shard of 20 sessions.
Here the newest shard is kept in memory, documents are appended and updated
in place at a cost of their own size, and the file is replaced whole on
flush; a sealed shard a prune rewrites is replaced the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.access_log import ACCESS
from agent.chain import SESSION
from agent.chain import record_fields as chained_fields
from agent.files import PRIVATE_FILE_MODE, write_atomic
from agent.shards import COMMANDS, SESSIONS


class ShardFile:
    """The newest shard's tables in memory, written whole only on flush().

    Each document's JSON member is kept from one flush to the next, and so
    is each table's text (its members joined, encoded) until one of its
    documents changes: commands are only ever appended, so a flush encodes
    what came since and the sessions' table, not the shard; the parts go
    to writev as they are. Joining, encoding and copying every member made
    a flush of 2 commands of 20 sessions into a shard of 600 to 1,200
    commands cost 1.26 ms of CPU (a hot loop); 0.55 ms this way.
    """

    def __init__(
        self,
        path: Path,
        data: dict[str, dict[str, Any]] | None = None,
        mode: int = PRIVATE_FILE_MODE,
    ) -> None:
        self.path = path
        self.mode = mode
        self._data: dict[str, dict[str, Any]] = data if data is not None else {}
        self.dirty = data is None
        # Bytes of the version on disk: the writer seals a shard by size too.
        self.size = path.stat().st_size if data is not None and path.exists() else 0
        # table -> doc id -> its `"id":{...}` member; table -> the next id
        self._members = {
            name: {k: _member(k, v) for k, v in table.items()}
            for name, table in self._data.items()
        }
        self._next = {
            name: max(map(int, table), default=0) + 1
            for name, table in self._data.items()
        }
        self._texts: dict[str, bytearray] = {}  # table -> its members, joined

    def read(self) -> dict[str, dict[str, Any]]:
        return self._data

    def append(self, table: str, docs: Iterable[dict[str, Any]]) -> list[int]:
        """New documents at the end of `table`; their ids, as TinyDB numbers them."""
        rows = self._data.setdefault(table, {})
        members = self._members.setdefault(table, {})
        n = self._next.get(table, 1)
        ids = []
        text = self._texts.get(table)
        for doc in docs:
            key = str(n)
            rows[key] = dict(doc)  # as TinyDB does: the caller's dict stays its own
            member = members[key] = _member(key, doc)
            if text is not None:
                text += b"," + member.encode() if text else member.encode()
            ids.append(n)
            n += 1
        self._next[table] = n
        if ids:
            self.dirty = True
        return ids

    def update(self, table: str, doc_id: int, fields: Mapping[str, Any]) -> None:
        """Change one document in place (it keeps its id and its place)."""
        key = str(doc_id)
        doc = self._data[table][key]
        doc.update(fields)
        self._members[table][key] = _member(key, doc)
        self._texts.pop(table, None)  # joined again at the flush
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            parts: list[bytes | bytearray] = []
            for name in self._data:
                text = self._texts.get(name)
                if text is None:
                    joined = ",".join(self._members[name].values())
                    text = self._texts[name] = bytearray(joined.encode())
                parts += (b"," if parts else b"{", _dumps(name).encode(), b":{", text)
                parts.append(b"}")
            parts.append(b"}" if parts else b"{}")
            write_atomic(self.path, parts, self.mode)
            self.size = sum(map(len, parts))
            self.dirty = False


class NewestShard:
    """The shard the writer writes: its file, and what the writer knows of it."""

    def __init__(
        self, path: Path, tables: dict[str, dict[str, Any]] | None, mode: int
    ) -> None:
        self.file = ShardFile(path, tables, mode)
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
        return self.file.path


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _member(key: str, doc: Any) -> str:
    """`"key":{doc}`, one member of a table's JSON object."""
    return f"{_dumps(key)}:{_dumps(doc)}"


def write_shard(path: Path, tables: Mapping[str, Any], mode: int) -> None:
    """Replace a (sealed) shard's file with these tables."""
    text = json.dumps(tables, ensure_ascii=False, separators=(",", ":"))
    write_atomic(path, text.encode("utf-8"), mode)
