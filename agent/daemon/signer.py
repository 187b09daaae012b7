"""The agent's signing key and the chain head the store writer extends.

The key is Ed25519 (the `cryptography` package), made on the first start as
DATA_DIR/chain/signing.key (PKCS#8 PEM, root only, 0600) with its public
half beside it (signing.pub) for `audit-agent key` and `audit-export
--verify`. The store writer links every record it stores (agent/chain.py)
and, in the same atomic shard write, signs a checkpoint of the head when a
shard is sealed, every CHECKPOINT_INTERVAL_S while the chain grows, and on a
clean stop. As the store opens, every shard is verified from the chain's
start (the shards are read then anyway): a store edited while no agent ran
is reported and never signed over.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.chain import (
    CHAIN_DIR,
    CHAIN_KEY,
    CHECKPOINT,
    GENESIS,
    HEAD_FILE,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    VERSION,
    ChainError,
    Link,
    PublicKey,
    doc_hash,
    link_of,
    read_head,
    read_prunes,
)
from agent.chain_verify import Walk
from agent.files import write_atomic
from agent.records import RecordError, iso, parse_iso
from agent.shards import COMMANDS, SESSIONS, StoreError, list_shards, read_shard

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 30.0  # the longest a growing chain goes unsigned
VERIFIED_FILE = "verified.json"  # in DATA_DIR/chain: see Opening


class Signer:
    """The agent's Ed25519 key."""

    def __init__(self, private: Any) -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private
        self.public_pem: bytes = private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        self.public = PublicKey(self.public_pem, "the agent's key")
        self.chain_id = self.public.chain_id

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Signer:
        """DATA_DIR/chain/signing.key, made (0600) if there is none yet."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
        )

        directory = data_dir / CHAIN_DIR
        path = directory / PRIVATE_KEY_FILE
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            if not path.exists():
                key = Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                write_atomic(path, pem)
                log.info("made the signing key %s", path)
            os.chmod(path, 0o600)
            private = serialization.load_pem_private_key(path.read_bytes(), None)
        except OSError as e:
            raise ChainError(f"cannot use signing key {path}: {e.strerror}") from e
        except ValueError as e:
            raise ChainError(f"signing key {path} is not a PEM private key") from e
        if not isinstance(private, Ed25519PrivateKey):
            raise ChainError(f"signing key {path} is not an Ed25519 key")
        signer = cls(private)
        public = directory / PUBLIC_KEY_FILE
        try:
            if not public.exists() or public.read_bytes() != signer.public_pem:
                write_atomic(public, signer.public_pem)
        except OSError as e:
            raise ChainError(f"cannot write {public}: {e.strerror}") from e
        return signer

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        from agent.chain import canonical

        sig = self._private.sign(canonical(statement))
        return {**statement, "sig": base64.b64encode(sig).decode("ascii")}


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """What `audit-agent status` shows of the chain."""

    chain_id: str
    head: int  # links so far
    signed_through: int  # the last checkpoint's link
    signed_at: float | None
    problem: str | None  # why the agent does not sign (a store edited offline)


class Chain:
    """The head the store writer extends, and the checkpoints it signs."""

    def __init__(self, signer: Signer, data_dir: Path) -> None:
        self.signer = signer
        self.chain_id = signer.chain_id
        self.data_dir = data_dir
        self.head = Link(0, GENESIS)
        self.signed_n = 0  # the last checkpoint's link
        self.signed_at: float | None = None
        self._signed_mono = time.monotonic()
        self.problem: str | None = None
        self._store_dir = Path()
        self._prunes: list[dict[str, Any]] = []
        self._head_file: dict[str, Any] | None = None

    # -- at start --------------------------------------------------------

    def opening(self, store_dir: Path) -> Opening:
        """The walk to feed every shard as the store opens (verify from the start)."""
        self._store_dir = store_dir
        try:
            prunes = read_prunes(store_dir)
            self._head_file = read_head(self.data_dir)
        except ChainError as e:
            self._refuse(str(e))
            prunes, self._head_file = [], None
        self._prunes = prunes
        return Opening(Walk(self.signer.public, prunes), self._verified_cache())

    def _verified_cache(self) -> list[list[Any]]:
        path = self.data_dir / CHAIN_DIR / VERIFIED_FILE
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return []
        if (
            not isinstance(doc, dict)
            or doc.get("chain") != self.chain_id
            or not self.signer.public.verifies(doc)
        ):
            log.warning(
                "%s is not signed by this agent's key: walking every shard", path
            )
            return []
        shards = doc.get("shards")
        return shards if isinstance(shards, list) else []

    def opened(self, opening: Opening) -> None:
        """The head the store holds; refuse to sign if it does not verify."""
        walk = opening.finish()
        report = walk.finish(self._head_file)
        if report.broken is None:
            statement = {
                "v": VERSION,
                "kind": "verified",
                "chain": self.chain_id,
                "time": iso(time.time()),
                "shards": opening.states,
            }
            path = self.data_dir / CHAIN_DIR / VERIFIED_FILE
            try:
                write_atomic(path, json_bytes(self.signer.sign(statement)))
            except OSError as e:
                log.error("cannot write %s: %s", path, e.strerror)
        if report.broken is not None:
            self._refuse(f"the store does not verify: {report.broken}")
            self.head = self._raw_head(list_shards(self._store_dir), self._prunes)
        else:
            self.head = Link(walk.expected - 1, walk.prev)
        self.signed_n = report.signed_through
        if report.signed_at is not None:
            with contextlib.suppress(RecordError):
                self.signed_at = parse_iso(report.signed_at)
        if report.before_chain and report.length == 0:
            log.info(
                "%d records were stored before the chain began; it begins now",
                report.before_chain,
            )

    def _refuse(self, why: str) -> None:
        if self.problem is None:
            self.problem = why
            log.error(
                "CHAIN: %s. Not signing: every record from now on is chained, but "
                "no checkpoint is signed until the store is looked at "
                "(audit-export --verify names the broken link).",
                why,
            )

    def _raw_head(self, shards: list[Path], prunes: list[dict[str, Any]]) -> Link:
        """The highest link stored, as it is, to go on from after a break."""
        best = Link(0, GENESIS)
        for record in prunes:
            for _first, last, h in record.get("runs") or ():
                if int(last) > best.n:
                    best = Link(int(last), str(h))
        for path in reversed(shards):
            try:
                tables = read_shard(path)
            except StoreError:
                continue
            for table in (SESSIONS, COMMANDS):
                for doc in (tables.get(table) or {}).values():
                    try:
                        link = link_of(doc)
                    except ChainError:
                        continue
                    if link is not None and link.n > best.n:
                        best = link
            if best.n:
                break
        return best

    # -- as the writer goes ----------------------------------------------

    def link(self, kind: str, doc: dict[str, Any]) -> None:
        """Give `doc` (about to be stored) the next link."""
        n = self.head.n + 1
        h = doc_hash(self.chain_id, n, kind, self.head.hash, doc)
        doc[CHAIN_KEY] = {"n": n, "hash": h}
        self.head = Link(n, h)

    def due(self, sealing: bool, stopping: bool = False) -> bool:
        """Whether this write should carry a checkpoint."""
        if self.problem is not None or self.head.n == self.signed_n:
            return False
        interval = time.monotonic() - self._signed_mono >= CHECKPOINT_INTERVAL_S
        return sealing or stopping or interval

    def checkpoint(self, reason: str) -> dict[str, Any]:
        return self.signer.sign(
            {
                "v": VERSION,
                "kind": CHECKPOINT,
                "chain": self.chain_id,
                "n": self.head.n,
                "head": self.head.hash,
                "time": iso(time.time()),
                "reason": reason,
            }
        )

    def committed(self, checkpoint: dict[str, Any]) -> None:
        """The shard holding `checkpoint` is durable: remember it beside the store."""
        self.signed_n = int(checkpoint["n"])
        self.signed_at = time.time()
        self._signed_mono = time.monotonic()
        path = self.data_dir / CHAIN_DIR / HEAD_FILE
        try:
            write_atomic(path, json_bytes(checkpoint))
        except OSError as e:
            log.error("cannot write %s: %s", path, e.strerror)

    def snapshot(self) -> ChainSnapshot:
        return ChainSnapshot(
            chain_id=self.chain_id,
            head=self.head.n,
            signed_through=self.signed_n,
            signed_at=self.signed_at,
            problem=self.problem,
        )


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


class Opening:
    """The walk as the store opens, stepping over shards verified at an earlier start.

    DATA_DIR/chain/verified.json (signed, like a checkpoint) keeps, for each
    shard in store order, the SHA-256 of its file and the walk's state after
    it. As long as the shards from the first on are those very files, the
    walk resumes from the cached state instead of hashing their links again;
    from the first shard that differs (sealed since, rewritten by a prune,
    edited), it walks. So a start hashes only what changed since the last.
    """

    def __init__(self, walk: Walk, cache: list[list[Any]]) -> None:
        self.walk = walk
        self._cache = cache
        self._pending: dict[str, Any] | None = None
        self._prefix = True
        self.states: list[list[Any]] = []
        self.skipped = 0

    def feed(self, name: str, digest: str, tables: dict[str, dict[str, Any]]) -> None:
        i = len(self.states)
        if self._prefix and i < len(self._cache):
            entry = self._cache[i]
            if isinstance(entry, list) and entry[:2] == [name, digest]:
                self._pending = entry[2]
                self.states.append(entry)
                self.skipped += 1
                return
        self._prefix = False
        self._resume()
        self.walk.feed(name, tables)
        if self.walk.broken is None:
            self.states.append([name, digest, self.walk.state()])

    def _resume(self) -> None:
        if self._pending is not None:
            try:
                self.walk.resume(self._pending)
            except (KeyError, TypeError, ValueError) as e:
                raise ChainError(f"{VERIFIED_FILE}: a bad shard state: {e}") from e
            self._pending = None

    def finish(self) -> Walk:
        self._resume()
        return self.walk
