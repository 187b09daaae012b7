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
else's is removed with a log line.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import pwd
import queue
import stat
import time
from collections.abc import Iterable
from pathlib import Path

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

INCOMPLETE_GRACE_S = 10.0  # a file still empty or cut short this young: retry
START_GRACE_S = 30.0  # no traced ssh this long after the intent: not-started


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
        self._unlinked: dict[str, Session] = {}  # tag -> intent session
        self._known: set[str] = set()  # tags of intents the store has
        self._taken: dict[str, Path] = {}  # tag -> spool file not yet durable
        self._durable: queue.Queue[str] = queue.Queue()
        self._warned: set[str] = set()

    def open(self) -> None:
        """Learn from the store which intents it holds and which are unlinked."""
        for session in self.store.sessions():
            if session.origin is None:
                continue
            self._known.add(session.tag)
            if session.ssh_pid == 0:
                self._unlinked[session.tag] = session

    # -- what the ingest asks --------------------------------------------

    def poll(self, now: float | None = None) -> None:
        """Store new intents, and mark those that waited too long."""
        now = time.time() if now is None else now
        for intent in self._scan():
            self.store.submit(self._adopt(intent))
        for tag, session in list(self._unlinked.items()):
            pending = session.status == SessionStatus.PENDING
            if pending and now - session.started_at > START_GRACE_S:
                session = session.never_started()
                self._unlinked[tag] = session
                log.warning(
                    "connection %s: %s -> %s@%s never started a traced ssh",
                    session.id,
                    session.bastion_user,
                    session.remote_account,
                    session.inventory_host,
                )
                self.store.submit(session)

    def link(self, start: SessionStart, session: Session) -> Session:
        """`session` (new, from a log) joined to its intent, if it has one."""
        intent = self._unlinked.get(start.tag)
        if intent is None or (intent.runner or intent.bastion_user) != start.user:
            return session
        del self._unlinked[start.tag]
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
        """Store callback (writer thread): these sessions are durable."""
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
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- the spool -------------------------------------------------------

    def _adopt(self, intent: Intent) -> Session:
        session = intent.to_session(self.store.new_session_id(intent.tag))
        self._known.add(intent.tag)
        self._unlinked[intent.tag] = session
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

    def _scan(self) -> list[Intent]:
        try:
            dir_fd = os.open(
                self.spool, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except OSError as e:
            self._warn_once("open", f"intents dir {self.spool}: {e.strerror}", e)
            return []
        try:
            st = os.fstat(dir_fd)
            writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if st.st_uid != 0 or (writable and not st.st_mode & stat.S_ISVTX):
                self._warn_once(
                    "mode",
                    f"intents dir {self.spool} must be root's and, if others may "
                    "write it, sticky (mode 1733); not reading it",
                )
                return []
            found = []
            for name in sorted(os.listdir(dir_fd)):
                tag = name.removesuffix(SUFFIX)
                if tag in self._taken or not name.endswith(SUFFIX):
                    continue
                intent = self._read(dir_fd, name, tag)
                if intent is not None:
                    found.append(intent)
            return found
        finally:
            os.close(dir_fd)

    def _read(self, dir_fd: int, name: str, tag: str) -> Intent | None:
        path = self.spool / name
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:  # a symlink (ELOOP), or worse
            self._discard(dir_fd, name, f"cannot open it: {e.strerror}")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                self._discard(dir_fd, name, "not a plain file", st.st_uid)
                return None
            if st.st_size > INTENT_MAX_BYTES:
                self._discard(dir_fd, name, "too large", st.st_uid)
                return None
            data = os.read(fd, INTENT_MAX_BYTES + 1)
        finally:
            os.close(fd)
        if not valid_tag(tag):
            self._discard(dir_fd, name, "its name is not a tag", st.st_uid)
            return None
        if tag in self._known:  # stored before a crash; only the file was left
            self._taken[tag] = path
            self._durable.put(tag)
            return None
        if st.st_uid not in self.writers:
            why = f"uid {st.st_uid} is not an account audit-shell runs as"
            self._discard(dir_fd, name, f"{why} (shell_users)", st.st_uid)
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
                return None  # audit-shell may still be writing it
            self._discard(dir_fd, name, str(e), st.st_uid)
            return None
        self._taken[tag] = path
        return return_value

    def _discard(self, dir_fd: int, name: str, why: str, uid: int = -1) -> None:
        # ascii(): a file name may hold a newline that would forge a log line.
        log.error(
            "intents dir %s: removed %s of uid %d: %s",
            self.spool,
            ascii(name[:80]),
            uid,
            why,
        )
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)

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
