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

    def opening(self, store_dir: Path) -> Walk:
        """The walk to feed every shard as the store opens (verify from the start)."""
        self._store_dir = store_dir
        try:
            prunes = read_prunes(store_dir)
            self._head_file = read_head(self.data_dir)
        except ChainError as e:
            self._refuse(str(e))
            prunes, self._head_file = [], None
        self._prunes = prunes
        return Walk(self.signer.public, prunes)

    def opened(self, walk: Walk) -> None:
        """The head the store holds; refuse to sign if it does not verify."""
        report = walk.finish(self._head_file)
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
    import json

    return json.dumps(value, separators=(",", ":")).encode("ascii")
