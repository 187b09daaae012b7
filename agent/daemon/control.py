"""The control socket: what audit-web may ask the daemon to do.

The wire is agent/control.py. The web reads the store but never writes it,
so it asks here to append access-log entries (the store writer numbers and
keeps them) and to terminate a live session (agent/daemon/cuts.py). Only
root and the web's account (`web_intents_user`) are served: the kernel says
who is calling (SO_PEERCRED), whatever the socket file's mode lets connect.
Requests are served one at a time by one owned thread, each read within one
deadline and at most REQUEST_MAX_BYTES long, so no client can hold it long.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.access_log import NAME_MAX_CHARS, AccessEntry, Action, clipped
from agent.control import (
    REASON_MAX_CHARS,
    REQUEST_DEADLINE_S,
    ControlError,
    ControlReply,
    encode_reply,
    read_request,
)
from agent.daemon.cuts import Cutter
from agent.daemon.store import Store
from agent.files import Sharing
from agent.locks import lock_path, remove_lock
from agent.unix_service import ServiceServer, UnixService, peer_credentials

log = logging.getLogger(__name__)

_ACTOR_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
ROLES = frozenset({"auditor", "user"})
SESSION_MAX_CHARS = 200
CLIENT_MAX_CHARS = 100


class ControlSocketError(AgentError):
    """The control socket cannot be set up."""


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    path: Path
    served: int
    refused: int  # callers that are neither root nor the web's account
    errors: int  # requests too long, too slow or not understood


def one_line(text: Any, limit: int) -> str:
    """What an auditor typed, fit for the person's terminal: printable, one line."""
    words = "".join(c if c.isprintable() else " " for c in str(text or "")).split()
    return " ".join(words)[:limit]


class Controller:
    """What one request gets, apart from the socket (so tests can call it)."""

    def __init__(
        self,
        store: Store,
        cutter: Cutter | None,
        allowed_uids: frozenset[int],
        locks_dir: Path | None = None,  # the lock rules' (agent/locks.py)
    ) -> None:
        self.store = store
        self.locks_dir = locks_dir
        self.cutter = cutter
        self.allowed_uids = allowed_uids
        self.served = 0
        self.refused = 0  # callers that are neither root nor the web's account
        self.errors = 0  # requests too long, too slow or not understood

    def handle(self, request: bytes) -> ControlReply:
        try:
            fields = json.loads(request)
            if not isinstance(fields, dict):
                raise ValueError("not an object")
            op = fields.get("op")
            actor = str(fields.get("actor") or "")
            if op == "ping":
                return ControlReply(True, "pong")
            if not _ACTOR_RE.fullmatch(actor[:NAME_MAX_CHARS]):
                return ControlReply(False, "bad actor")
            if op == "access":
                return self._access(fields, actor)
            if op == "terminate":
                return self._terminate(fields, actor)
            if op == "unlock":
                return self._unlock(fields, actor)
        except (ValueError, TypeError) as e:
            return ControlReply(False, f"bad request: {e}")
        return ControlReply(False, f"unknown op {str(op)[:40]!r}")

    def _access(self, fields: dict[str, Any], actor: str) -> ControlReply:
        action = Action(str(fields.get("action")))
        if action == Action.TERMINATE:
            return ControlReply(False, "a terminate is logged by the agent itself")
        role = str(fields.get("role") or "")
        if role not in ROLES:
            return ControlReply(False, "bad role")
        session = fields.get("session")
        entry = self.store.submit_access(
            AccessEntry(
                seq=0,
                time="",
                actor=actor,
                role=role,
                action=action,
                session=clipped(session, SESSION_MAX_CHARS) if session else None,
                detail=clipped(fields.get("detail")),
                client=clipped(fields.get("client"), CLIENT_MAX_CHARS),
                ok=fields.get("ok") is not False,
            )
        )
        return ControlReply(True, "logged", entry.seq)

    def _terminate(self, fields: dict[str, Any], actor: str) -> ControlReply:
        sid = clipped(fields.get("session"), SESSION_MAX_CHARS)
        reason = one_line(fields.get("reason"), REASON_MAX_CHARS)
        if not reason:
            return ControlReply(False, "a terminate needs a reason")
        session = next((s for s in self.store.sessions() if s.id == sid), None)
        if session is None:
            ok, message = False, f"no session {sid!r}"
        elif self.cutter is None:
            ok, message = False, "this agent cannot terminate sessions"
        else:
            ok, message = self.cutter.request(session, actor, reason)
        entry = self.store.submit_access(
            AccessEntry(
                seq=0,
                time="",
                actor=actor,
                role="auditor",
                action=Action.TERMINATE,
                session=sid,
                detail=reason if ok else f"{reason} (not done: {message})",
                client=clipped(fields.get("client"), CLIENT_MAX_CHARS),
                ok=ok,
            )
        )
        log.info("terminate of %s by %s: %s", sid, actor, message)
        return ControlReply(ok, message, entry.seq)

    def _unlock(self, fields: dict[str, Any], actor: str) -> ControlReply:
        """An auditor lets a locked bastion user in again (audit-agent unlock)."""
        user = clipped(fields.get("user"), NAME_MAX_CHARS)
        if self.locks_dir is None or lock_path(self.locks_dir, user) is None:
            return ControlReply(False, f"cannot unlock {user!r}")
        lock = remove_lock(self.locks_dir, user)
        message = f"{user} unlocked" if lock else f"{user} was not locked"
        entry = self.store.submit_access(
            AccessEntry(
                seq=0,
                time="",
                actor=actor,
                role="auditor",
                action=Action.UNLOCK,
                session=lock.session if lock else None,
                detail=f"{message} ({lock.describe()})" if lock else message,
                client=clipped(fields.get("client"), CLIENT_MAX_CHARS),
                ok=True,
            )
        )
        log.info("unlock of %s by %s: %s", user, actor, message)
        return ControlReply(True, message, entry.seq)


class _Handler(socketserver.BaseRequestHandler):
    server: ServiceServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        controller: Controller = self.server.context
        pid, uid = peer_credentials(conn)
        try:
            try:
                # Read whole even when refused: a socket closed on unread
                # data resets the caller before it reads the answer.
                request = read_request(conn, time.monotonic() + REQUEST_DEADLINE_S)
            except ControlError as e:
                controller.errors += 1
                reply = ControlReply(False, str(e))
            else:
                if uid not in controller.allowed_uids:
                    controller.refused += 1
                    log.warning("control: refused pid %d, uid %d", pid, uid)
                    reply = ControlReply(False, "only root and audit-web are served")
                else:
                    reply = controller.handle(request)
                    controller.served += 1
            conn.settimeout(REQUEST_DEADLINE_S)
            conn.sendall(encode_reply(reply))
        except OSError:
            return  # the caller went away: its problem, not ours


class ControlServer(UnixService):
    """The socket, served by one owned thread; a context manager.

    Who may connect: the group that may read the store (0660), else root
    (0600); who is served: root and the web's account (SO_PEERCRED).
    """

    def __init__(
        self, path: Path, controller: Controller, sharing: Sharing | None = None
    ) -> None:
        gid = (sharing or Sharing()).gid
        super().__init__(
            path,
            _Handler,
            controller,
            "control",
            0o660 if gid is not None else 0o600,
            gid,
            ControlSocketError,
        )
        self.controller = controller

    def snapshot(self) -> ControlSnapshot:
        c = self.controller
        return ControlSnapshot(self.path, c.served, c.refused, c.errors)
