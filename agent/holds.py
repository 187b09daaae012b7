"""Legal holds: sessions that retention never prunes, by session id or by tag.

DATA_DIR/holds.json (root only), written by `audit-agent hold` and `unhold`
under an exclusive lock on DATA_DIR/holds.lock and replaced atomically. A
prune round holds the same lock shared from reading the holds to its last
removal, so a hold that `audit-agent hold` has reported placed is honoured by
every round that follows, and a round in progress finishes before it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from agent import AgentError
from agent.files import write_atomic
from agent.records import Session

HOLDS_FILE = "holds.json"
HOLDS_LOCK = "holds.lock"


class HoldError(AgentError):
    """The holds file cannot be read or changed."""


@dataclass(frozen=True, slots=True)
class Hold:
    session: str | None  # a session id, or
    tag: str | None  # every session of a tag
    reason: str
    by: str
    at: str  # iso()

    def covers(self, session: Session) -> bool:
        if self.session is not None:
            return session.id == self.session
        return self.tag is not None and session.tag == self.tag

    @property
    def name(self) -> str:
        return f"session {self.session}" if self.session else f"tag {self.tag}"


def read_holds(data_dir: Path) -> tuple[Hold, ...]:
    path = data_dir / HOLDS_FILE
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as e:
        raise HoldError(f"cannot read {path}: {e}") from e
    try:
        return tuple(
            Hold(
                session=h.get("session"),
                tag=h.get("tag"),
                reason=str(h.get("reason") or ""),
                by=str(h.get("by") or ""),
                at=str(h.get("at") or ""),
            )
            for h in doc["holds"]
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise HoldError(f"{path} is not a holds file: {e}") from e


def write_holds(data_dir: Path, holds: tuple[Hold, ...]) -> None:
    doc = {"holds": [asdict(h) for h in holds]}
    text = json.dumps(doc, ensure_ascii=True, indent=1)
    write_atomic(data_dir / HOLDS_FILE, text.encode("ascii"))


@contextlib.contextmanager
def holds_locked(data_dir: Path, exclusive: bool) -> Iterator[None]:
    """The holds lock: exclusive to change the holds, shared for a prune round."""
    path = data_dir / HOLDS_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise HoldError(f"cannot open {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
