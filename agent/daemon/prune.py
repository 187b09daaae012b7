"""Removing sessions from shards, and the signed record of what was removed.

Pruning takes whole sessions out: every document of theirs (each state, each
command) in every shard that holds one. Their links leave gaps in the chain;
the prune record names each gap as a run (first link, last link, the hash of
the last) so that `audit-export --verify` can step over it and still prove
the rest, and it is signed and made durable (DATA_DIR/store/prunes.json)
before any shard is rewritten. A crash between the two leaves documents that
the record already covers; the next start removes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.chain import PRUNE, PRUNES_FILE, VERSION, ChainError, link_of, read_prunes
from agent.daemon.signer import Signer
from agent.files import write_atomic
from agent.records import iso
from agent.shards import COMMANDS, SESSIONS, StoreError, read_shard

log = logging.getLogger(__name__)

# A shard document belongs to the session named by this key of its table.
OWNER_KEY = {SESSIONS: "id", COMMANDS: "session"}


@dataclass
class Removed:
    """What came out of the shards for a prune (or would, on a dry run)."""

    links: list[tuple[int, str]] = field(default_factory=list)  # (n, hash)
    session_records: int = 0
    commands: int = 0
    unchained: int = 0  # records stored before the chain began

    def add(self, other: Removed) -> None:
        self.links.extend(other.links)
        self.session_records += other.session_records
        self.commands += other.commands
        self.unchained += other.unchained


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune removed from the store (or would have, on a dry run)."""

    sessions: tuple[str, ...]
    removed: Removed
    shards: int  # shards rewritten
    record: dict[str, Any] | None  # the signed prune record, once written


def pruned_sessions(store_dir: Path) -> set[str]:
    """The ids of every session a prune record names (never given again)."""
    try:
        records = read_prunes(store_dir)
    except ChainError as e:
        log.error("%s: pruned sessions are not known", e)
        return set()
    return {str(s) for r in records for s in r.get("sessions") or ()}


def strip(
    tables: Mapping[str, Mapping[str, Any]], sessions: set[str]
) -> tuple[dict[str, dict[str, Any]], Removed]:
    """The tables without the documents of `sessions`, and what those were."""
    removed = Removed()
    out: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        owner = OWNER_KEY.get(name)
        if owner is None:
            out[name] = dict(table)  # checkpoints and anything else stay
            continue
        kept: dict[str, Any] = {}
        for doc_id, doc in table.items():
            if doc.get(owner) not in sessions:
                kept[doc_id] = doc
                continue
            try:
                link = link_of(doc)
            except ChainError:
                link = None
            if link is None:
                removed.unchained += 1
            else:
                removed.links.append((link.n, link.hash))
            if name == SESSIONS:
                removed.session_records += 1
            else:
                removed.commands += 1
        out[name] = kept
    return out, removed


def gather(
    store_dir: Path,
    names: list[str],
    sessions: set[str],
    newest: tuple[str, Mapping[str, Mapping[str, Any]]] | None,
) -> tuple[Removed, list[tuple[Path, dict[str, dict[str, Any]]]]]:
    """What pruning `sessions` takes out of these shards, and each shard after.

    `newest`: the name and tables of the shard the writer holds in memory.
    """
    removed = Removed()
    rewrites = []
    for name in names:
        path = store_dir / name
        try:
            if newest is not None and name == newest[0]:
                tables: Mapping[str, Mapping[str, Any]] = newest[1]
            else:
                tables = read_shard(path)
        except StoreError as e:
            log.error("prune: %s; left as it is", e)
            continue
        stripped, out = strip(tables, sessions)
        removed.add(out)
        rewrites.append((path, stripped))
    return removed, rewrites


def runs_of_links(links: list[tuple[int, str]]) -> list[list[Any]]:
    """Consecutive links as runs [first, last, hash of last]."""
    runs: list[list[Any]] = []
    for n, h in sorted(links):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1], runs[-1][2] = n, h
        elif not runs or n > runs[-1][1]:
            runs.append([n, n, h])
    return runs


def prune_statement(
    chain_id: str,
    *,
    by: str,
    reason: str,
    sessions: list[str],
    removed: Removed,
    casts: list[str],
    quarantine: list[str],
) -> dict[str, Any]:
    """The prune record, to be signed (agent/chain.py describes its encoding)."""
    return {
        "v": VERSION,
        "kind": PRUNE,
        "chain": chain_id,
        "time": iso(time.time()),
        "by": by,
        "reason": reason,
        "sessions": sorted(sessions),
        "runs": runs_of_links(removed.links),
        "session_records": removed.session_records,
        "commands": removed.commands,
        "unchained": removed.unchained,
        "casts": sorted(casts),
        "quarantine": sorted(quarantine),
    }


def record_prune(
    signer: Signer,
    store_dir: Path,
    mode: int,
    *,
    by: str,
    reason: str,
    sessions: list[str],
    removed: Removed,
    files: tuple[list[str], list[str]],
) -> dict[str, Any]:
    """Sign the prune record and add it to DATA_DIR/store/prunes.json, atomically.

    `files`: the recordings and the quarantined files it removes.
    """
    record = signer.sign(
        prune_statement(
            signer.chain_id,
            by=by,
            reason=reason,
            sessions=sessions,
            removed=removed,
            casts=files[0],
            quarantine=files[1],
        )
    )
    records = read_prunes(store_dir)
    records.append(record)
    text = json.dumps(records, ensure_ascii=True, separators=(",", ":"))
    write_atomic(store_dir / PRUNES_FILE, text.encode("ascii"), mode)
    return record
