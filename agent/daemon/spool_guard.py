"""Bounds on what one user can make the agent do through the spools.

Any bastion user may create files in the two spools (connection records and
paramiko recordings: root's, mode 1733). Each file costs the agent a read,
and each record or recording a stored session, in the one ingest thread that
serves every user: 8,000 records written in 0.8 s by one user delayed another
user's command by 26.5 s, and 20,000 empty recordings, read again every
second, took 0.9 s of each 1 s round. So:

- a spool is listed again only when it changed (SpoolListing), and a file is
  read when it is new or changed, never each round;
- per uid (UidBudget), at most `max_files` files are in flight at once
  (records not yet linked, recordings followed, files waiting or not yet
  whole) and at most `rate_per_s` become sessions each second (a token
  bucket: a burst waits for its turn);
- a file still empty or cut short after INCOMPLETE_GRACE_S is removed.

What is refused is counted per uid and logged once a minute per uid, not
once per file.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INCOMPLETE_GRACE_S = 10.0  # a file still empty or cut short this young: wait
# A directory's mtime moves in coarse steps (a kernel tick): a listing made
# within this of its mtime may have missed a file created in the same step.
MTIME_SLACK_NS = 2_000_000_000
REFUSALS_LOG_EVERY_S = 60.0
LOOKS_PER_ROUND = 512  # new spool files looked at in one round, at most
BURST_S = 10.0  # a uid's bucket holds this many seconds of its rate


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A spool file as lstat saw it; `signature` changes when it is written."""

    path: Path
    uid: int
    signature: tuple[int, int, int]  # inode, size, mtime_ns

    @classmethod
    def of(cls, path: Path) -> SpoolEntry | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return cls(path, st.st_uid, (st.st_ino, st.st_size, st.st_mtime_ns))


class SpoolListing:
    """The files of a spool directory that are new since the last look.

    The directory is listed again only when its mtime changed (a file was
    created, removed or renamed), so a spool of 20,000 untouched files costs
    one stat a round; and at most `limit` new files are returned a call, the
    rest kept for the next ones, so that a flood costs each round a bounded
    amount.
    """

    def __init__(self, path: Path, suffix: str) -> None:
        self.path = path
        self.suffix = suffix
        self._names: set[str] = set()
        self._backlog: list[str] = []  # new names not returned yet, newest last
        self._stamp: tuple[int, int] | None = None  # the directory's inode, mtime

    def new_entries(self, limit: int = LOOKS_PER_ROUND) -> list[SpoolEntry]:
        self._list()
        names, self._backlog = self._backlog[:limit], self._backlog[limit:]
        entries = (SpoolEntry.of(self.path / name) for name in names)
        return [e for e in entries if e is not None]

    def _list(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            names = {n for n in os.listdir(self.path) if n.endswith(self.suffix)}
        except OSError:
            return
        # Trust this listing only once the directory is older than its
        # mtime's resolution; until then look again next round.
        recent = time.time_ns() - st.st_mtime_ns < MTIME_SLACK_NS
        self._stamp = None if recent else stamp
        self._backlog = [n for n in self._backlog if n in names]
        self._backlog += sorted(names - self._names)
        self._names = names

    def forget(self, path: Path) -> None:
        """`path` is gone (removed by the agent): a new file of that name is new."""
        self._names.discard(path.name)


class UidBudget:
    """Per uid: files in flight, new sessions per second, refusals counted."""

    def __init__(self, what: str, rate_per_s: float, max_files: int) -> None:
        self.what = what  # "connection records", "recordings": for the log
        self.rate_per_s = rate_per_s
        self.max_files = max_files
        self.in_flight: collections.Counter[int] = collections.Counter()
        self._tokens: dict[int, tuple[float, float]] = {}  # uid -> tokens, at
        self._refused: collections.Counter[int] = collections.Counter()
        self._logged_at: dict[int, float] = {}

    def full(self, uid: int) -> bool:
        return self.in_flight[uid] >= self.max_files

    def hold(self, uid: int) -> None:
        self.in_flight[uid] += 1

    def release(self, uid: int) -> None:
        if self.in_flight[uid] > 1:
            self.in_flight[uid] -= 1
        else:
            self.in_flight.pop(uid, None)

    def available(self, uid: int) -> bool:
        """Whether take(uid) would succeed now."""
        return self._refill(uid, time.monotonic()) >= 1.0

    def take(self, uid: int) -> bool:
        """One new session for `uid`, if its bucket has a token."""
        now = time.monotonic()
        tokens = self._refill(uid, now)
        if tokens < 1.0:
            return False
        self._tokens[uid] = (tokens - 1.0, now)
        return True

    def _refill(self, uid: int, now: float) -> float:
        burst = max(1.0, self.rate_per_s * BURST_S)
        tokens, at = self._tokens.get(uid, (burst, now))
        tokens = min(burst, tokens + (now - at) * self.rate_per_s)
        self._tokens[uid] = (tokens, now)
        return tokens

    def refused(self, uid: int, spool: Path, why: str) -> None:
        """Count a file of `uid` the agent would not keep; log now and then."""
        self._refused[uid] += 1
        now = time.monotonic()
        if now - self._logged_at.get(uid, -REFUSALS_LOG_EVERY_S) < (
            REFUSALS_LOG_EVERY_S
        ):
            return
        self._logged_at[uid] = now
        count, self._refused[uid] = self._refused[uid], 0
        log.error(
            "%s: removed %d %s of uid %d (%s; at most %d in flight and %.1f new "
            "per second per uid)",
            spool,
            count,
            self.what,
            uid,
            why,
            self.max_files,
            self.rate_per_s,
        )


def remove(path: Path) -> None:
    """Unlink a spool file the agent will not keep (root may, in a sticky dir)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class RecordingGate:
    """Which paramiko recordings of the spool the ingest opens, and when.

    A recording is looked at when it is new or changed since the last look;
    one without its start line yet waits until it changes, and is removed
    once stale. A uid's whole recordings beyond its share (followed and
    incomplete ones together) wait their turn, unread.
    """

    def __init__(self, spool: Path, suffix: str, budget: UidBudget) -> None:
        self.spool = spool
        self.budget = budget
        self.listing = SpoolListing(spool, suffix)
        self._incomplete: dict[Path, tuple[SpoolEntry, float]] = {}  # first seen
        self._deferred: dict[int, collections.deque[Path]] = {}  # per uid, in order
        self._waiting: set[Path] = set()  # deferred, not yet let through
        self._held: dict[Path, int] = {}  # path -> uid: counted in its budget
        self._swept_at = time.monotonic()

    def arrivals(self) -> list[Path]:
        """Paths to look at now: new files, changed ones, deferred ones let in."""
        paths = [entry.path for entry in self.listing.new_entries()]
        now = time.monotonic()
        if now - self._swept_at >= INCOMPLETE_GRACE_S / 2:
            self._swept_at = now
            paths += self._sweep(now)
        for uid, deferred in list(self._deferred.items()):
            while deferred and self._room(uid) and self.budget.available(uid):
                path = deferred.popleft()
                self._waiting.discard(path)
                paths.append(path)
            if not deferred:
                del self._deferred[uid]
        return paths

    def look(self, path: Path) -> SpoolEntry | None:
        """`path` as it is now, if it is worth reading; None if unchanged or waiting."""
        if path in self._waiting:
            return None
        entry = SpoolEntry.of(path)
        if entry is None:
            self.gone(path)
            return None
        seen = self._incomplete.get(path)
        if seen is not None and seen[0].signature == entry.signature:
            return None
        return entry

    def incomplete(self, entry: SpoolEntry) -> None:
        """`entry` has no start line yet: wait until it changes or goes stale.

        It counts against its uid if there is room; a file just created by a
        recorder is empty for a moment, so even beyond its uid's share it is
        not removed before INCOMPLETE_GRACE_S.
        """
        if entry.path not in self._held and self._room(entry.uid):
            self._hold(entry.path, entry.uid)
        seen = self._incomplete.get(entry.path)
        first = seen[1] if seen is not None else time.monotonic()
        self._incomplete[entry.path] = (entry, first)

    def may_follow(self, entry: SpoolEntry) -> bool:
        """A whole recording: follow it now, or it waits for its uid's turn."""
        held = entry.path in self._held
        if not (held or self._room(entry.uid)) or not self.budget.take(entry.uid):
            self._defer(entry)
            return False
        self._incomplete.pop(entry.path, None)
        if not held:
            self._hold(entry.path, entry.uid)
        return True

    def may_quarantine(self, entry: SpoolEntry) -> bool:
        """An unusable file: kept for a person in quarantine, or just removed.

        Its uid's tokens decide, so that a flood of junk does not fill the
        quarantine.
        """
        return self.budget.take(entry.uid)

    def done(self, path: Path) -> None:
        """The session of `path` ended: it no longer counts against its uid."""
        uid = self._held.pop(path, None)
        if uid is not None:
            self.budget.release(uid)

    def gone(self, path: Path) -> None:
        """`path` is no longer the gate's business (removed, or done with)."""
        self._incomplete.pop(path, None)
        self._waiting.discard(path)
        self.listing.forget(path)
        uid = self._held.pop(path, None)
        if uid is not None:
            self.budget.release(uid)

    def drop(self, path: Path) -> None:
        remove(path)
        self.gone(path)

    def _room(self, uid: int) -> bool:
        return not self.budget.full(uid)

    def _hold(self, path: Path, uid: int) -> None:
        self._held[path] = uid
        self.budget.hold(uid)

    def _defer(self, entry: SpoolEntry) -> None:
        if entry.path in self._held:
            return  # it keeps its place; looked at again when it changes
        if entry.path not in self._waiting:
            self._waiting.add(entry.path)
            self._deferred.setdefault(entry.uid, collections.deque()).append(entry.path)

    def _sweep(self, now: float) -> list[Path]:
        """Incomplete files: changed ones to look at again; stale ones removed."""
        changed = []
        for path, (entry, first) in list(self._incomplete.items()):
            current = SpoolEntry.of(path)
            if current is None:
                self.gone(path)
            elif current.signature != entry.signature:
                changed.append(path)
            elif now - first > INCOMPLETE_GRACE_S:
                self.budget.refused(entry.uid, self.spool, "never got a start line")
                self.drop(path)
        return changed
