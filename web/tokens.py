"""One-time tokens: issued by audit-web, redeemed once by the web terminal.

A token is 160 bits from `secrets`, shown as eight groups of four base32
letters. Only its SHA-256 is stored (a random 160-bit secret needs no slow
hash: there is nothing to guess from), in an SQLite file only audit-web's
account can read. Redeeming is one UPDATE that sets `used_at` where it is
still null and not expired, so two terminals racing with the same token
cannot both win. Times are epoch seconds (UTC by definition) from one
injected clock; nothing here ever looks at local time.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.web_config import FAILURE_WINDOW_S, FAILURES_MAX, TOKEN_TTL_S
from web import WebError

TOKEN_BYTES = 20  # 160 bits
KEEP_S = 86400.0  # used and expired tokens are purged after a day
DB_TIMEOUT_S = 5.0

Clock = Callable[[], float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    web_user TEXT NOT NULL,
    host TEXT NOT NULL,
    account TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS failures (client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_client ON failures (client, at);
"""


class TokenError(WebError):
    """The token store cannot be opened or written."""


class Verdict(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown token"
    EXPIRED = "token expired"
    USED = "token already used"
    THROTTLED = "too many failed attempts; wait a few minutes"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a redeemed token lets its bearer open, and for whom."""

    web_user: str
    host: str  # the inventory's host name
    account: str
    issued_at: float


@dataclass(frozen=True, slots=True)
class Redemption:
    verdict: Verdict
    grant: Grant | None = None


def new_token() -> str:
    """`ABCD-EFGH-…`: 160 random bits, easy to read out and type."""
    text = base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalize(typed: str) -> str:
    """What the person typed, as issued: case, spaces and dashes do not count."""
    return "".join(c for c in typed.upper() if c not in "- \t\r\n")


def token_hash(token: str) -> str:
    return hashlib.sha256(normalize(token).encode()).hexdigest()


class TokenStore:
    """The tokens and the failed attempts, in one SQLite file."""

    def __init__(
        self,
        path: Path,
        ttl_s: float = TOKEN_TTL_S,
        clock: Clock = time.time,
        failures_max: int = FAILURES_MAX,
        failure_window_s: float = FAILURE_WINDOW_S,
    ) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.clock = clock
        self.failures_max = failures_max
        self.failure_window_s = failure_window_s
        with self._db() as db:
            db.executescript(_SCHEMA)

    def issue(self, web_user: str, host: str, account: str) -> tuple[str, float]:
        """A new token for `web_user` to open `account@host`; it and its expiry."""
        token = new_token()
        now = self.clock()
        with self._db() as db:
            db.execute(
                "DELETE FROM tokens WHERE expires_at < ? OR used_at < ?",
                (now - KEEP_S, now - KEEP_S),
            )
            db.execute(
                "INSERT INTO tokens (hash, web_user, host, account, issued_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash(token), web_user, host, account, now, now + self.ttl_s),
            )
        return token, now + self.ttl_s

    def redeem(self, typed: str, client: str) -> Redemption:
        """Use the token once; a failure counts against `client`."""
        digest = token_hash(typed)
        now = self.clock()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # one redeemer at a time, across processes
            if self._throttled(db, client, now):
                return Redemption(Verdict.THROTTLED)
            row = db.execute(
                "SELECT web_user, host, account, issued_at, expires_at, used_at"
                " FROM tokens WHERE hash = ?",
                (digest,),
            ).fetchone()
            verdict = Verdict.UNKNOWN
            if row is not None:
                web_user, host, account, issued_at, expires_at, used_at = row
                if used_at is not None:
                    verdict = Verdict.USED
                elif now >= expires_at:
                    verdict = Verdict.EXPIRED
                else:
                    db.execute(
                        "UPDATE tokens SET used_at = ?, used_by = ?"
                        " WHERE hash = ? AND used_at IS NULL",
                        (now, client, digest),
                    )
                    return Redemption(
                        Verdict.OK, Grant(web_user, host, account, issued_at)
                    )
            db.execute("INSERT INTO failures VALUES (?, ?)", (client, now))
            return Redemption(verdict)

    def throttled(self, client: str) -> bool:
        """Whether `client` failed too often lately (sign-ins use this too)."""
        with self._db() as db:
            return self._throttled(db, client, self.clock())

    def failed(self, client: str) -> None:
        """Count one failure against `client`."""
        with self._db() as db:
            db.execute("INSERT INTO failures VALUES (?, ?)", (client, self.clock()))

    def _throttled(self, db: sqlite3.Connection, client: str, now: float) -> bool:
        db.execute("DELETE FROM failures WHERE at <= ?", (now - self.failure_window_s,))
        (failures,) = db.execute(
            "SELECT count(*) FROM failures WHERE client = ?", (client,)
        ).fetchone()
        return bool(failures >= self.failures_max)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection per call: Django's threads and the redeemer share the file."""
        try:
            db = sqlite3.connect(self.path, timeout=DB_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise TokenError(f"cannot open token store {self.path}: {e}") from e
        try:
            yield db
            if db.in_transaction:
                db.execute("COMMIT")
        except sqlite3.Error as e:
            raise TokenError(f"token store {self.path}: {e}") from e
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
