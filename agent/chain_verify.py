"""Verifying the chain (agent/chain.py) over the store's shards, without TinyDB.

One pass, shard by shard, in store order: each table's links must follow
each other in the order stored, the links of all tables together must count
1, 2, 3 ... with no gap that a signed prune record does not explain, each
document must hash to its link after its predecessor, and every signed
checkpoint must name the hash the chain has at its position. The first link
that fails is named (its shard, session and seq, and what is wrong) and the
walk stops there. Memory holds one shard and the link hashes of the last two.

Records stored before the chain began (no `_chain`) are counted, never
called broken; a record without a link after the chain began is.
"""

from __future__ import annotations

import bisect
import enum
import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.chain import (
    CHECKPOINT,
    CHECKPOINTS,
    COMMAND,
    GENESIS,
    PRUNE,
    SESSION,
    ChainError,
    Link,
    PublicKey,
    Run,
    doc_hash,
    link_of,
    runs_of,
)
from agent.shards import COMMANDS, SESSIONS, StoreError, read_shard

TABLES = ((SESSIONS, SESSION), (COMMANDS, COMMAND))


class Fault(enum.StrEnum):
    MISSING = "missing"
    EDITED = "edited"
    REORDERED = "reordered"
    BAD_SIGNATURE = "bad signature"
    TRUNCATED = "truncated after the last checkpoint"
    UNCHAINED = "not chained"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Broken:
    fault: Fault
    shard: str
    what: str  # the record: `session S seq N (link N)`, a checkpoint ...
    detail: str

    def __str__(self) -> str:
        where = f"shard {self.shard}: " if self.shard else ""
        return f"{where}{self.what}: {self.fault}: {self.detail}"


@dataclass(frozen=True, slots=True)
class PruneSummary:
    time: str
    by: str
    sessions: int
    commands: int
    links: int
    casts: int
    quarantine: int


@dataclass
class Report:
    chain_id: str
    links: dict[str, int] = field(default_factory=lambda: {SESSION: 0, COMMAND: 0})
    before_chain: int = 0  # records stored before the chain began
    shards: int = 0
    signed_through: int = 0  # the last checkpoint's link
    signed_at: str | None = None
    checkpoints: int = 0
    length: int = 0  # links in the chain, pruned ones included
    pruned_links: int = 0
    pruned_present: int = 0  # pruned, not yet removed from their shard
    prunes: list[PruneSummary] = field(default_factory=list)
    broken: Broken | None = None

    @property
    def unsigned(self) -> int:
        return max(0, self.length - self.signed_through)


def _name(value: Any) -> str:
    """A stored value in a message: escaped (stored text is hostile), cut short."""
    return ascii(str(value))[1:-1][:80]


def _describe(kind: str, doc: Any, n: int | None = None) -> str:
    """A record as a person finds it: `session S seq N (link N)`."""
    if not isinstance(doc, Mapping):
        return f"a {kind} record that is not an object"
    if kind == COMMAND:
        what = f"session {_name(doc.get('session'))} seq {_name(doc.get('seq'))}"
    else:
        what = f"session {_name(doc.get('id'))} state"
    return what if n is None else f"{what} (link {n})"


class Walk:
    """Feed it the shards in store order; it verifies as it goes."""

    def __init__(self, key: PublicKey, prunes: list[dict[str, Any]]) -> None:
        self.key = key
        self.report = Report(key.chain_id)
        self.expected = 1  # the next link's n
        self.prev = GENESIS  # the hash before it
        self.begun = False  # a shard with links was fed
        self._last: tuple[str, Any, int] | str | None = None  # kind, doc, n
        self.last_shard = ""
        self._hashes: dict[int, str] = {}
        self._older: dict[int, str] = {}
        runs: list[Run] = []
        for record in prunes:
            runs.extend(self._prune_record(record))
        runs.sort(key=lambda r: r.first)
        self._runs = runs
        self._firsts = [r.first for r in runs]
        self._by_first = {r.first: r for r in runs}

    @property
    def last_seen(self) -> str:
        """The last record verified, as `_describe` names it."""
        if self._last is None:
            return "the chain's start"
        if isinstance(self._last, str):
            return self._last
        return _describe(*self._last)

    @property
    def broken(self) -> Broken | None:
        return self.report.broken

    def _fail(self, fault: Fault, shard: str, what: str, detail: str) -> None:
        if self.report.broken is None:
            self.report.broken = Broken(fault, shard, what, detail)

    def _prune_record(self, record: Mapping[str, Any]) -> list[Run]:
        when = str(record.get("time"))
        if record.get("kind") != PRUNE or not self.key.verifies(record):
            self._fail(
                Fault.BAD_SIGNATURE,
                "",
                f"prune record of {when:.40}",
                f"not signed by key {self.key.chain_id}",
            )
            return []
        try:
            runs = runs_of(record)
        except ChainError as e:
            self._fail(Fault.BAD_SIGNATURE, "", f"prune record of {when:.40}", str(e))
            return []
        self.report.prunes.append(
            PruneSummary(
                time=when,
                by=str(record.get("by")),
                sessions=len(record.get("sessions") or ()),
                commands=int(record.get("commands") or 0),
                links=sum(r.last - r.first + 1 for r in runs),
                casts=len(record.get("casts") or ()),
                quarantine=len(record.get("quarantine") or ()),
            )
        )
        return runs

    # -- a walk's state between shards (the agent's cache of verified shards) --

    def state(self) -> dict[str, Any]:
        """Where the walk stands after the shards fed so far, as JSON."""
        r = self.report
        last = max(self._hashes) if self._hashes else None
        return {
            "expected": self.expected,
            "prev": self.prev,
            "begun": self.begun,
            "last_seen": self.last_seen,
            "last_link": [last, self._hashes[last]] if last is not None else None,
            "links": dict(r.links),
            "before_chain": r.before_chain,
            "shards": r.shards,
            "signed_through": r.signed_through,
            "signed_at": r.signed_at,
            "checkpoints": r.checkpoints,
            "pruned_links": r.pruned_links,
            "pruned_present": r.pruned_present,
        }

    def resume(self, state: dict[str, Any]) -> None:
        """Stand where `state()` stood, without walking those shards again."""
        r = self.report
        self.expected, self.prev = int(state["expected"]), str(state["prev"])
        self.begun, self._last = bool(state["begun"]), str(state["last_seen"])
        last = state.get("last_link")
        self._older, self._hashes = {}, ({int(last[0]): str(last[1])} if last else {})
        r.links = {k: int(v) for k, v in state["links"].items()}
        r.before_chain, r.shards = int(state["before_chain"]), int(state["shards"])
        r.signed_through = int(state["signed_through"])
        r.signed_at = state.get("signed_at")
        r.checkpoints = int(state["checkpoints"])
        r.pruned_links = int(state["pruned_links"])
        r.pruned_present = int(state["pruned_present"])

    def _run_holding(self, n: int) -> Run | None:
        i = bisect.bisect_right(self._firsts, n) - 1
        if i >= 0 and self._runs[i].first <= n <= self._runs[i].last:
            return self._runs[i]
        return None

    def _skip_runs(self) -> None:
        while (run := self._by_first.get(self.expected)) is not None:
            self.report.pruned_links += run.last - run.first + 1
            self.prev = run.head
            self._hashes[run.last] = run.head
            self.expected = run.last + 1

    # -- shards ----------------------------------------------------------

    def feed_path(self, path: Path) -> dict[str, dict[str, Any]] | None:
        """Read and verify one shard; its tables (None if it is unreadable)."""
        try:
            tables = read_shard(path)
        except StoreError as e:
            self._fail(Fault.UNREADABLE, path.name, "the shard", str(e))
            return None
        self.feed(path.name, tables)
        return tables

    def feed(self, shard: str, tables: Mapping[str, Mapping[str, Any]]) -> None:
        if self.broken is not None:
            return
        self.report.shards += 1
        self._older, self._hashes = self._hashes, {}
        self.last_shard = shard
        ordered = [self._table_links(shard, tables, t, k) for t, k in TABLES]
        if self.broken is not None:
            return
        if any(ordered):
            self.begun = True
        for n, kind, doc, link in heapq.merge(*ordered, key=lambda e: e[0]):
            self._link(shard, n, kind, doc, link)
            if self.broken is not None:
                return
        self._checkpoints(shard, tables.get(CHECKPOINTS) or {})

    def _table_links(
        self, shard: str, tables: Mapping[str, Mapping[str, Any]], table: str, kind: str
    ) -> list[tuple[int, str, Mapping[str, Any], Link]]:
        links: list[tuple[int, str, Mapping[str, Any], Link]] = []
        for doc in (tables.get(table) or {}).values():
            try:
                link = link_of(doc) if type(doc) is dict else None
            except ChainError as e:
                self._fail(Fault.EDITED, shard, _describe(kind, doc), str(e))
                return []
            if link is None:
                if self.begun or links or type(doc) is not dict:
                    self._fail(
                        Fault.UNCHAINED,
                        shard,
                        _describe(kind, doc),
                        "a record without a link after the chain began",
                    )
                    return []
                self.report.before_chain += 1
                continue
            if links and link.n <= links[-1][0]:
                self._fail(
                    Fault.REORDERED,
                    shard,
                    _describe(kind, doc, link.n),
                    f"stored after link {links[-1][0]} in table {table}",
                )
                return []
            links.append((link.n, kind, doc, link))
        return links

    def _link(
        self, shard: str, n: int, kind: str, doc: Mapping[str, Any], link: Link
    ) -> None:
        self._skip_runs()
        if n < self.expected:
            if self._run_holding(n) is not None:
                self.report.pruned_present += 1
                return
            self._fail(
                Fault.REORDERED,
                shard,
                _describe(kind, doc, n),
                f"stored after link {self.expected - 1} ({self.last_seen})",
            )
            return
        if n > self.expected:
            gap = (
                f"link {self.expected}"
                if n == self.expected + 1
                else f"links {self.expected} to {n - 1}"
            )
            self._fail(
                Fault.MISSING,
                shard,
                gap,
                f"between {self.last_seen} and {_describe(kind, doc, n)}",
            )
            return
        if doc_hash(self.key.chain_id, n, kind, self.prev, doc) != link.hash:
            self._fail(
                Fault.EDITED,
                shard,
                _describe(kind, doc, n),
                "its fields or its predecessor do not match its hash",
            )
            return
        self.prev = link.hash
        self._hashes[n] = link.hash
        self.expected = n + 1
        self.report.links[kind] += 1
        self._last = (kind, doc, n)

    def _checkpoints(self, shard: str, table: Mapping[str, Any]) -> None:
        for doc in table.values():
            n = doc.get("n") if isinstance(doc, Mapping) else None
            what = f"checkpoint of link {n} ({doc.get('time') if n else '?'})"
            if (
                not isinstance(doc, Mapping)
                or doc.get("kind") != CHECKPOINT
                or doc.get("chain") != self.key.chain_id
                or not self.key.verifies(doc)
            ):
                self._fail(
                    Fault.BAD_SIGNATURE,
                    shard,
                    what,
                    f"not signed by key {self.key.chain_id}",
                )
                return
            self.check_head(shard, what, doc)
            if self.broken is not None:
                return
            self.report.checkpoints += 1
            if int(doc["n"]) >= self.report.signed_through:
                self.report.signed_through = int(doc["n"])
                self.report.signed_at = str(doc.get("time"))

    def check_head(self, shard: str, what: str, statement: Mapping[str, Any]) -> None:
        """A signed statement of the head: does the chain hold that hash there?"""
        n, head = statement.get("n"), statement.get("head")
        if type(n) is not int or n < 0:
            self._fail(Fault.BAD_SIGNATURE, shard, what, "names no link")
            return
        if n == 0:
            return  # the empty chain
        self._skip_runs()
        known = self._hashes.get(n) or self._older.get(n)
        if known is None:
            run = self._run_holding(n)
            if run is not None:
                known = run.head if n == run.last else head  # the prune signed it
        if known is None:
            if n >= self.expected:
                self._fail(
                    Fault.TRUNCATED,
                    shard,
                    what,
                    f"it signs {n} links but the chain ends at link "
                    f"{self.expected - 1} ({self.last_seen})",
                )
            else:
                self._fail(
                    Fault.MISSING, shard, what, f"link {n} is not where it was signed"
                )
            return
        if known != head:
            self._fail(
                Fault.EDITED,
                shard,
                what,
                f"link {n} no longer has the hash that was signed (the records "
                "before it were edited and hashed again)",
            )

    def finish(self, head: Mapping[str, Any] | None = None) -> Report:
        """The report; `head`: the last checkpoint the agent says it signed."""
        if self.broken is None:
            self._skip_runs()
        self.report.length = self.expected - 1
        if self.broken is None and head is not None:
            what = f"the agent's last checkpoint (link {head.get('n')})"
            if not self.key.verifies(head) or head.get("chain") != self.key.chain_id:
                self._fail(
                    Fault.BAD_SIGNATURE,
                    "",
                    what,
                    f"not signed by key {self.key.chain_id}",
                )
            elif int(head.get("n") or 0) > self.report.signed_through:
                self._fail(
                    Fault.TRUNCATED,
                    "",
                    what,
                    f"signed at {head.get('time')}, but the store's newest checkpoint "
                    f"signs link {self.report.signed_through} and the chain ends at "
                    f"link {self.report.length}",
                )
        return self.report


def verify_store(
    shards: Iterator[Path] | list[Path],
    key: PublicKey,
    prunes: list[dict[str, Any]],
    head: Mapping[str, Any] | None = None,
) -> Report:
    """Verify every shard from the chain's start; the report."""
    walk = Walk(key, prunes)
    for path in shards:
        walk.feed_path(path)
        if walk.broken is not None:
            break
    return walk.finish(head)
