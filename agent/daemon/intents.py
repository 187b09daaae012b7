"""The agent's side of the connection records: stored, then linked to sessions.

audit-shell writes `<tag>.json` into the intents spool before it starts ssh
(the format: agent/intent_file.py). The agent reads each new file, takes the
bastion user from the file's *owner*, never from its text, stores it as a
session document in status `pending`, and links
the session it later builds from the strace log of an ssh with the same tag
and owner to it. A connection whose ssh never shows up becomes `not-started`
and stays in the audit trail. A file is removed once the store holds it
durably; read again after a crash, it is recognised and not stored twice.

audit-web (web/redeem.py) writes the records of the web terminal's sessions:
their ssh runs as the terminal's service account, but the person is the web
user who took the token. Such a record names both, and the agent believes it
only from a file owned by root or by the configured `web_intents_user`.

Anyone may create a file in the spool, but a record tells where a person
came from (client address, inventory host) and when: only those of root, of
audit-shell's accounts (`shell_users`) and of audit-web's count; anyone
else's is removed with a log line. And what one uid can make the agent read and store
is bounded (agent/daemon/spool_guard.py): the spool is listed again only
when it changed, at most `max_files` records of a uid are in flight (waiting,
not yet whole, or pending) and at most `rate_per_s` are stored each second;
a record over the bound is removed, and counted.
"""

from __future__ import annotations

import collections
import heapq
import hmac
import logging
import os
import pwd
import queue
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from agent.daemon.spool_guard import (
    INCOMPLETE_GRACE_S,
    SpoolEntry,
    SpoolListing,
    UidBudget,
    remove,
)
from agent.daemon.store import Store
from agent.intent_file import (
    INTENT_MAX_BYTES,
    SUFFIX,
    Intent,
    IntentError,
    parse_intent,
    user_name,
)
from agent.records import Session, SessionStatus
from tracer.session_log import SessionStart
from tracer.tags import valid_tag

log = logging.getLogger(__name__)

START_GRACE_S = 30.0  # no traced ssh this long after the intent: not-started
LINK_WINDOW_S = 600.0  # a not-started record may still be linked this long
MAX_FILES_PER_UID = 256  # records of one uid in flight at once
RATE_PER_UID_S = 5.0  # records of one uid stored per second


class IntentLinker:
    """The agent's reader of the spool; used by the ingest thread only.

    `flushed()` is the exception: the store's writer thread calls it, and it
    only queues.
    """

    def __init__(
        self,
        spool: Path,
        store: Store,
        web_user: str = "",
        shell_uids: Iterable[int] = (),
        budget: UidBudget | None = None,
    ) -> None:
        self.spool = spool
        self.store = store
        self.web_uids = {0}  # who may write web-token records
        if web_user:
            try:
                self.web_uids.add(pwd.getpwnam(web_user).pw_uid)
            except KeyError:
                log.error("web_intents_user %r is not an account here", web_user)
        self.writers = self.web_uids | set(shell_uids)  # whose records count
        self.budget = budget or UidBudget(
            "connection records", RATE_PER_UID_S, MAX_FILES_PER_UID
        )
        self._listing = SpoolListing(spool, SUFFIX)
        self._waiting: dict[int, collections.deque[SpoolEntry]] = {}  # per uid
        self._incomplete: dict[Path, tuple[SpoolEntry, float]] = {}  # first seen
        self._unlinked: dict[str, Session] = {}  # tag -> intent session
        self._uid_of: dict[str, int] = {}  # tag -> uid, while it holds the budget
        self._deadlines: list[tuple[float, str, float]] = []  # due, tag, started_at
        self._known: set[str] = set()  # tags of intents the store has
        self._taken: dict[str, Path] = {}  # tag -> spool file not yet durable
        self._durable: queue.Queue[str] = queue.Queue()
        self._warned: set[str] = set()

    def trust(self, uids: Iterable[int]) -> None:
        """Count these accounts' records too (shell_users, known once started)."""
        self.writers |= set(uids)

    def open(self) -> None:
        """Learn from the store which intents it holds and which are unlinked."""
        now = time.time()
        for session in self.store.sessions():
            if session.origin is None:
                continue
            self._known.add(session.tag)
            if session.ssh_pid == 0 and now - session.started_at < LINK_WINDOW_S:
                self._unlinked[session.tag] = session
                self._remind(session, START_GRACE_S)

    # -- what the ingest asks --------------------------------------------

    def poll(self, now: float | None = None) -> None:
        """Store new intents, and mark those that waited too long."""
        now = time.time() if now is None else now
        for intent in self._scan():
            self.store.submit(self._adopt(intent))
        while self._deadlines and self._deadlines[0][0] < now:
            _, tag, started_at = heapq.heappop(self._deadlines)
            session = self._unlinked.get(tag)
            if session is None or session.started_at != started_at:
                continue  # linked meanwhile (and the tag perhaps used again)
            if session.status != SessionStatus.PENDING:
                del self._unlinked[tag]  # too late to link: memory stays bounded
                continue
            session = session.never_started()
            self._unlinked[tag] = session
            self._release(tag)
            self._remind(session, LINK_WINDOW_S)
            log.warning(
                "connection %s: %s -> %s@%s never started a traced ssh",
                session.id,
                session.bastion_user,
                session.remote_account,
                session.inventory_host,
            )
            self.store.submit(session)

    def _remind(self, session: Session, after_s: float) -> None:
        """Look at this intent again `after_s` after it was made."""
        due = session.started_at + after_s
        heapq.heappush(self._deadlines, (due, session.tag, session.started_at))

    def link(self, start: SessionStart, session: Session) -> Session:
        """`session` (new, from a log) joined to its intent, if it has one."""
        intent = self._unlinked.get(start.tag)
        if intent is None or (intent.runner or intent.bastion_user) != start.user:
            return session
        del self._unlinked[start.tag]
        self._release(start.tag)
        if (session.host, session.remote_user) != (intent.host, intent.remote_user):
            log.warning(
                "session %s: ssh went to %s@%s, its connection record said %s@%s",
                intent.id,
                session.remote_user,
                session.host,
                intent.remote_user,
                intent.host,
            )
        return session.linked_to(intent)

    def proven(self, start: SessionStart, proof: str) -> bool:
        """Whether the record of `start`'s tag, for its user, carries `proof`.

        audit-shell puts the same secret in the record and in its paramiko
        recording's start line; nobody else can read either file.
        """
        intent = self._unlinked.get(start.tag)
        return (
            intent is not None
            and bool(intent.proof)
            and (intent.runner or intent.bastion_user) == start.user
            and hmac.compare_digest(intent.proof, proof)
        )

    def flushed(self, sessions: list[Session]) -> None:
        """Store callback (the flushing thread): these sessions are durable."""
        for session in sessions:
            if session.origin is not None:
                self._durable.put(session.tag)

    def remove_durable(self) -> None:
        """Delete the spool files the store now holds."""
        while True:
            try:
                tag = self._durable.get_nowait()
            except queue.Empty:
                return
            path = self._taken.pop(tag, None)
            if path is not None:
                remove(path)
                self._listing.forget(path)

    # -- the spool -------------------------------------------------------

    def _adopt(self, intent: Intent) -> Session:
        session = intent.to_session(self.store.new_session_id(intent.tag))
        self._known.add(intent.tag)
        self._unlinked[intent.tag] = session
        self._uid_of[intent.tag] = intent.uid  # it holds the budget until linked
        self._remind(session, START_GRACE_S)
        log.info(
            "connection %s: %s from %s -> %s@%s (%s:%d)",
            session.id,
            intent.bastion_user,
            intent.client_addr or "?",
            intent.remote_account,
            intent.inventory_host,
            intent.address,
            intent.port,
        )
        return session

    def _release(self, tag: str) -> None:
        uid = self._uid_of.pop(tag, None)
        if uid is not None:
            self.budget.release(uid)

    def _spool_usable(self) -> bool:
        try:
            st = os.stat(self.spool, follow_symlinks=False)
        except OSError as e:
            self._warn_once("open", f"intents dir {self.spool}: {e.strerror}", e)
            return False
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if (
            not stat.S_ISDIR(st.st_mode)
            or st.st_uid != 0
            or (writable and not st.st_mode & stat.S_ISVTX)
        ):
            self._warn_once(
                "mode",
                f"intents dir {self.spool} must be root's and, if others may "
                "write it, sticky (mode 1733); not reading it",
            )
            return False
        return True

    def _scan(self) -> list[Intent]:
        """The intents the budget lets in this round, read once each."""
        if not self._spool_usable():
            return []
        for entry in self._listing.new_entries():
            if entry.path.name.removesuffix(SUFFIX) not in self._taken:
                self._queue(entry)
        self._recheck_incomplete()
        found = []
        for uid, waiting in list(self._waiting.items()):
            while waiting and self.budget.take(uid):
                intent = self._read(waiting.popleft())
                if intent is not None:
                    found.append(intent)
            if not waiting:
                del self._waiting[uid]
        return found

    def _queue(self, entry: SpoolEntry) -> None:
        """A new file: it waits for its uid's turn, or is over the bound."""
        if self.budget.full(entry.uid):
            self.budget.refused(entry.uid, self.spool, "too many at once")
            self._drop(entry)
            return
        self.budget.hold(entry.uid)
        self._waiting.setdefault(entry.uid, collections.deque()).append(entry)

    def _recheck_incomplete(self) -> None:
        """Files that were empty or cut short: read again once they changed."""
        now = time.monotonic()
        for path, (entry, seen) in list(self._incomplete.items()):
            current = SpoolEntry.of(path)
            if current is None:
                del self._incomplete[path]
                self._listing.forget(path)
                self.budget.release(entry.uid)
            elif current.signature != entry.signature:
                del self._incomplete[path]
                self._waiting.setdefault(entry.uid, collections.deque()).append(current)
            elif now - seen > INCOMPLETE_GRACE_S:
                del self._incomplete[path]
                self.budget.refused(entry.uid, self.spool, "never completed")
                self._drop(entry, held=True)

    def _drop(self, entry: SpoolEntry, held: bool = False) -> None:
        remove(entry.path)
        self._listing.forget(entry.path)
        if held:
            self.budget.release(entry.uid)

    def _read(self, entry: SpoolEntry) -> Intent | None:
        """The intent in `entry`'s file; None if there is none (yet)."""
        path = entry.path
        name = path.name
        tag = name.removesuffix(SUFFIX)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            self._drop(entry, held=True)
            return None
        except OSError as e:  # a symlink (ELOOP), or worse
            self._discard(entry, f"cannot open it: {e.strerror}")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                self._discard(entry, "not a plain file")
                return None
            if st.st_size > INTENT_MAX_BYTES:
                self._discard(entry, "too large")
                return None
            data = os.read(fd, INTENT_MAX_BYTES + 1)
        finally:
            os.close(fd)
        if not valid_tag(tag):
            self._discard(entry, "its name is not a tag")
            return None
        if st.st_uid != entry.uid:
            self.budget.release(entry.uid)  # replaced since: its owner's turn
            entry = SpoolEntry(path, st.st_uid, entry.signature)
            self.budget.hold(entry.uid)
        if tag in self._known:  # stored before a crash; only the file was left
            self.budget.release(entry.uid)
            self._taken[tag] = path
            self._durable.put(tag)
            return None
        if st.st_uid not in self.writers:
            why = f"uid {st.st_uid} is not an account audit-shell runs as"
            self._discard(entry, f"{why} (shell_users)")
            return None
        try:
            return_value = parse_intent(
                data,
                tag,
                st.st_uid,
                user_name(st.st_uid),
                time.time(),
                may_name_user=st.st_uid in self.web_uids,
            )
        except IntentError as e:
            if time.time() - st.st_mtime < INCOMPLETE_GRACE_S:
                # audit-shell may still be writing it: read again once it changed.
                self._incomplete[path] = (entry, time.monotonic())
                return None
            self._discard(entry, str(e))
            return None
        self._taken[tag] = path
        return return_value

    def _discard(self, entry: SpoolEntry, why: str) -> None:
        self.budget.refused(
            entry.uid, self.spool, f"{ascii(entry.path.name[:80])}: {why}"
        )
        self._drop(entry, held=True)

    def _warn_once(self, key: str, message: str, error: OSError | None = None) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        if isinstance(error, FileNotFoundError):
            log.info("%s; audit-shell connection records are not collected", message)
        else:
            log.error(message)


def uids_of(users: Iterable[str]) -> set[int]:
    """The uids of `shell_users`; one log line for a name that is no account."""
    uids = set()
    for user in users:
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            log.info("shell_users: %r is not an account here", user)
    return uids
