"""The hash chain over the store's records, and its signed statements.

Every session state and every command the agent stores is a link of one
chain per bastion. A link's hash depends only on its own record's fields and
its predecessor's hash, never on how TinyDB lays shards out, so the fleet
store (or anyone) can recompute it from the record alone:

    hash(n) = SHA-256(canonical({"v": 1, "chain": CHAIN, "n": n,
                                 "kind": KIND, "prev": hash(n - 1),
                                 "record": RECORD}))

- CHAIN: the bastion's chain id, the key id of its Ed25519 signing key (the
  first 16 bytes of SHA-256 of the raw 32-byte public key, as hex).
- n: 1, 2, 3 ... in store order; hash(0) is 64 zeros.
- KIND: "session" or "command".
- RECORD: the document as stored, without the `_chain` link itself, without
  every key that starts with `_` (the agent's private bookkeeping), and for a
  session without `command_count`: that one grows with every command, and the
  chained commands themselves prove it.
- canonical(x): JSON with keys sorted, no whitespace, every non-ASCII
  character escaped as Python's `json.dumps(x, sort_keys=True,
  separators=(",", ":"), ensure_ascii=True)` writes it; values are strings,
  whole numbers, booleans, null, lists and objects (the store holds no
  floats: times are text).

A stored document carries its link as `"_chain": {"n": n, "hash": HEX}`.
Signed statements (a checkpoint of the chain head, a prune record of what
retention removed) are canonical JSON objects too, with `"sig"`: the base64
Ed25519 signature of canonical(statement without "sig").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError

VERSION = 1
CHAIN_KEY = "_chain"
GENESIS = "0" * 64
SESSION, COMMAND = "session", "command"
CHECKPOINT, PRUNE = "checkpoint", "prune"
# A session's field left out of its link (see the module docstring).
UNCHAINED_SESSION_FIELDS = frozenset({"command_count"})
# DATA_DIR/chain: the signing key (root only) and the last checkpoint signed.
CHAIN_DIR = "chain"
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
HEAD_FILE = "head.json"
# DATA_DIR/store/prunes.json: the signed prune records, oldest first.
PRUNES_FILE = "prunes.json"
CHECKPOINTS = "checkpoints"  # the table of a shard that holds its checkpoints


class ChainError(AgentError):
    """A key or a signed statement that cannot be used."""


# One encoder for all: json.dumps with options builds a new one on every call.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def canonical(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("ascii")


def record_fields(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a stored document that its link covers."""
    if kind == SESSION:
        return {
            k: v
            for k, v in doc.items()
            if not k.startswith("_") and k not in UNCHAINED_SESSION_FIELDS
        }
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def link_hash(chain: str, n: int, kind: str, prev: str, record: Any) -> str:
    body = {
        "v": VERSION,
        "chain": chain,
        "n": n,
        "kind": kind,
        "prev": prev,
        "record": record,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


def doc_hash(chain: str, n: int, kind: str, prev: str, doc: Mapping[str, Any]) -> str:
    """The hash a stored document's link must have, after `prev`."""
    return link_hash(chain, n, kind, prev, record_fields(kind, doc))


@dataclass(frozen=True, slots=True)
class Link:
    n: int
    hash: str

    def to_document(self) -> dict[str, Any]:
        return {"n": self.n, "hash": self.hash}


def link_of(doc: Mapping[str, Any]) -> Link | None:
    """The document's link; None if it has none (stored before the chain)."""
    value = doc.get(CHAIN_KEY)
    if value is None:
        return None
    # Exact types, not isinstance(): this runs once per record on a verify.
    n = value.get("n") if type(value) is dict else None
    h = value.get("hash") if type(value) is dict else None
    if type(n) is not int or n < 1 or type(h) is not str or len(h) != 64:
        raise ChainError(f"{CHAIN_KEY} is not a link: {value!r:.120}")
    return Link(n, h)


# -- keys and signatures -------------------------------------------------


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:32]


class PublicKey:
    """An Ed25519 public key that checks signed statements."""

    def __init__(self, pem: bytes, source: str) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PublicKey,
        )

        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as e:
            raise ChainError(f"{source}: not a PEM public key") from e
        if not isinstance(key, Ed25519PublicKey):
            raise ChainError(f"{source}: not an Ed25519 public key")
        self._key = key
        raw = key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.chain_id = key_id(raw)
        self.source = source

    @classmethod
    def read(cls, path: Path) -> PublicKey:
        try:
            return cls(path.read_bytes(), str(path))
        except OSError as e:
            raise ChainError(f"cannot read public key {path}: {e.strerror}") from e

    def verifies(self, statement: Mapping[str, Any]) -> bool:
        """Whether `statement["sig"]` signs the rest of it with this key."""
        from cryptography.exceptions import InvalidSignature

        sig = statement.get("sig")
        if not isinstance(sig, str):
            return False
        try:
            raw = base64.b64decode(sig, validate=True)
            body = {k: v for k, v in statement.items() if k != "sig"}
            self._key.verify(raw, canonical(body))
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            return False
        return True


def public_key_path(data_dir: Path) -> Path:
    return data_dir / CHAIN_DIR / PUBLIC_KEY_FILE


@dataclass(frozen=True, slots=True)
class Run:
    """Links first..last removed by a prune; `head` is the hash of `last`."""

    first: int
    last: int
    head: str


def runs_of(record: Mapping[str, Any]) -> list[Run]:
    try:
        return [Run(int(a), int(b), str(h)) for a, b, h in record["runs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ChainError(f"prune record without valid runs: {e}") from e


def read_prunes(store_dir: Path) -> list[dict[str, Any]]:
    """The prune records of the store, oldest first ([] when nothing was pruned)."""
    path = store_dir / PRUNES_FILE
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise ChainError(f"cannot read {path}: {e}") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ChainError(f"{path} is not a list of prune records")
    return data


def read_head(data_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint the agent signed, kept beside the store."""
    path = data_dir / CHAIN_DIR / HEAD_FILE
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ChainError(f"cannot read {path}: {e}") from e
    return data if isinstance(data, dict) else None
