"""`audit-export --verify`: is the record complete and unaltered, or where not.

The walk is the shared core's (agent/chain_verify.py); this prints its report
for a person, names the first broken link, and exits NOT_VERIFIED (5) then.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from agent.chain import (
    ChainError,
    PublicKey,
    link_of,
    public_key_path,
    read_head,
    read_prunes,
)
from agent.chain_verify import Report, verify_store
from agent.exits import ExitStatus
from agent.reader import check_data_dir
from agent.shards import COMMANDS, SESSIONS, StoreError, list_shards, read_shard
from agent.tools.options import printable

MAX_PRUNE_LINES = 10


def verify(data_dir: Path, public_key: Path | None, out: IO[str]) -> int:
    store_dir = check_data_dir(data_dir)
    shards = list_shards(store_dir)
    key_path = public_key or public_key_path(data_dir)
    if public_key is None and not key_path.exists():
        return _no_key(shards, key_path, out)
    key = PublicKey.read(key_path)
    report = verify_store(shards, key, read_prunes(store_dir), read_head(data_dir))
    write_report(report, key_path, out)
    return ExitStatus.NOT_VERIFIED if report.broken else ExitStatus.SUCCESS


def _no_key(shards: list[Path], key_path: Path, out: IO[str]) -> int:
    """No agent has signed here: a store from before the chain, or no key given."""
    records = 0
    for path in shards:
        try:
            tables = read_shard(path)
        except StoreError:
            continue
        for name in (SESSIONS, COMMANDS):
            for doc in (tables.get(name) or {}).values():
                if link_of(doc) is not None:
                    raise ChainError(
                        f"no public key at {key_path}: give --public-key FILE "
                        "(`audit-agent key` prints it)"
                    )
                records += 1
    out.write(
        f"{records} records before the chain began: stored before this version "
        "chained them, so none can be proven; nothing is broken\n"
    )
    return ExitStatus.SUCCESS


def write_report(report: Report, key_path: Path, out: IO[str]) -> None:
    out.write(f"chain {report.chain_id} (public key {key_path})\n")
    if report.before_chain:
        out.write(
            f"before the chain: {report.before_chain} records before the chain "
            "began (stored before this version; not provable, not broken)\n"
        )
    links = report.links
    out.write(
        f"verified: {sum(links.values())} links ({links['session']} session "
        f"states, {links['command']} commands) in {report.shards} shards"
    )
    if report.checkpoints:
        out.write(
            f"; signed through link {report.signed_through} at {report.signed_at} "
            f"({report.checkpoints} checkpoints)\n"
        )
    else:
        out.write("; no signed checkpoint yet\n")
    if report.prunes:
        out.write(
            f"pruned: {report.pruned_links} links in {len(report.prunes)} "
            "signed prune records\n"
        )
        for p in report.prunes[-MAX_PRUNE_LINES:]:
            out.write(
                f"  {p.time} by {printable(p.by)}: {p.sessions} sessions, "
                f"{p.commands} commands, {p.links} links, {p.casts} recording "
                f"files, {p.quarantine} quarantined files\n"
            )
        if report.pruned_present:
            out.write(
                f"  {report.pruned_present} pruned records are still in their shards "
                "(the agent removes them when it next starts)\n"
            )
    if report.broken is not None:
        out.write(f"BROKEN: {printable(str(report.broken))}\n")
        return
    if report.unsigned:
        out.write(
            f"not yet signed: {report.unsigned} links after the last checkpoint "
            "(chained; the running agent signs them within 30 s and on its stop)\n"
        )
    out.write(
        f"OK: complete and unaltered up to link {report.signed_through}"
        + (f" of {report.length}\n" if report.length != report.signed_through else "\n")
    )
