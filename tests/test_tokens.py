"""One-time tokens: issue, redeem once, expire, throttle; a clock we move."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from web.tokens import TokenStore, Verdict, normalize, token_hash


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store(tmp_path: Path, clock: Clock, **kw: int) -> TokenStore:
    return TokenStore(tmp_path / "tokens.sqlite", ttl_s=300, clock=clock, **kw)


def test_issue_redeem_once(tmp_path: Path) -> None:
    clock = Clock()
    tokens = store(tmp_path, clock)
    token, expires = tokens.issue("alice", "web1", "deploy")
    assert expires == clock.now + 300
    assert len(normalize(token)) == 32  # 160 bits of base32
    clock.now += 299
    # Typed in lower case, without the dashes: the same token.
    first = tokens.redeem(normalize(token).lower(), "192.0.2.9")
    assert first.verdict is Verdict.OK and first.grant is not None
    assert (first.grant.web_user, first.grant.host, first.grant.account) == (
        "alice",
        "web1",
        "deploy",
    )
    assert tokens.redeem(token, "192.0.2.9").verdict is Verdict.USED


def test_expired_at_ttl(tmp_path: Path) -> None:
    clock = Clock()
    tokens = store(tmp_path, clock)
    token, _ = tokens.issue("alice", "web1", "deploy")
    clock.now += 299.9
    fresh, _ = tokens.issue("alice", "web1", "deploy")
    clock.now += 0.1  # exactly 300 s old: expired
    assert tokens.redeem(token, "c").verdict is Verdict.EXPIRED
    assert tokens.redeem(token, "c").verdict is Verdict.EXPIRED
    assert tokens.redeem(fresh, "c").verdict is Verdict.OK


def test_unknown_and_throttled_per_client(tmp_path: Path) -> None:
    clock = Clock()
    tokens = store(tmp_path, clock, failures_max=3)
    token, _ = tokens.issue("alice", "web1", "deploy")
    for _ in range(3):
        assert tokens.redeem("AAAA-BBBB", "mallory").verdict is Verdict.UNKNOWN
    # Even the right token waits while the client is throttled ...
    assert tokens.redeem(token, "mallory").verdict is Verdict.THROTTLED
    # ... but another client is not.
    assert tokens.redeem(token, "alice-pc").verdict is Verdict.OK
    clock.now += 301  # the failures age out of the window
    assert tokens.redeem("AAAA", "mallory").verdict is Verdict.UNKNOWN


def test_only_the_hash_is_stored(tmp_path: Path) -> None:
    tokens = store(tmp_path, Clock())
    token, _ = tokens.issue("alice", "web1", "deploy")
    raw = (tmp_path / "tokens.sqlite").read_bytes()
    assert normalize(token).encode() not in raw and token.encode() not in raw
    db = sqlite3.connect(tmp_path / "tokens.sqlite")
    assert db.execute("SELECT hash FROM tokens").fetchall() == [(token_hash(token),)]
    db.close()


def test_two_stores_race_for_one_token(tmp_path: Path) -> None:
    """Two processes' stores on one file: one use only."""
    clock = Clock()
    a, b = store(tmp_path, clock), store(tmp_path, clock)
    token, _ = a.issue("alice", "web1", "deploy")
    verdicts = {a.redeem(token, "x").verdict, b.redeem(token, "y").verdict}
    assert verdicts == {Verdict.OK, Verdict.USED}
