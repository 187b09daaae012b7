"""The daemon's control socket, the wire: one JSON line each way over a unix socket.

audit-web reads the store but never writes it, and cannot signal another
user's ssh; it asks the daemon (agent/daemon/control.py) to act: append an
access-log entry, or terminate a live session. The daemon serves only root
and the web's account (SO_PEERCRED), reads at most REQUEST_MAX_BYTES within
one deadline per request, and answers with a `ControlReply`. Both sides
share this module, so that the web imports no daemon code.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError

DEFAULT_CONTROL_SOCKET = Path("/run/bastion-audit/control.sock")
REQUEST_MAX_BYTES = 16 * 1024
REQUEST_DEADLINE_S = 5.0  # to read one request, and for its answer
REASON_MAX_CHARS = 200


class ControlError(AgentError):
    """The daemon's control socket cannot be reached or answered nonsense."""


@dataclass(frozen=True, slots=True)
class ControlReply:
    ok: bool
    message: str
    seq: int = 0  # the access-log entry's number, for `access`


def read_request(conn: socket.socket, deadline: float) -> bytes:
    """One line of at most REQUEST_MAX_BYTES before `deadline` (monotonic).

    ControlError for a line too long, a peer too slow or gone half way.
    """
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ControlError("request not complete in time")
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except TimeoutError as e:
            raise ControlError("request not complete in time") from e
        if not chunk:
            raise ControlError("request cut short")
        data += chunk
        if len(data) > REQUEST_MAX_BYTES:
            raise ControlError(f"request longer than {REQUEST_MAX_BYTES} bytes")
    line = data.split(b"\n", 1)[0]
    if len(line) > REQUEST_MAX_BYTES:
        raise ControlError(f"request longer than {REQUEST_MAX_BYTES} bytes")
    return line


def ask(path: Path, request: dict[str, Any]) -> ControlReply:
    """Send one request to the daemon at `path` and read its answer."""
    line = (json.dumps(request, ensure_ascii=False) + "\n").encode()
    if len(line) > REQUEST_MAX_BYTES:
        raise ControlError("request too long for the control socket")
    deadline = time.monotonic() + REQUEST_DEADLINE_S * 2  # its deadline, and ours
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(REQUEST_DEADLINE_S)
            s.connect(str(path))
            s.sendall(line)
            data = read_request(s, deadline)
    except OSError as e:
        raise ControlError(
            f"cannot reach the agent at {path}: {e.strerror or e}"
        ) from e
    try:
        fields = json.loads(data)
        return ControlReply(
            ok=fields["ok"] is True,
            message=str(fields["message"]),
            seq=int(fields.get("seq") or 0),
        )
    except (ValueError, TypeError, KeyError) as e:
        raise ControlError(f"the agent at {path} answered nonsense") from e


def encode_reply(reply: ControlReply) -> bytes:
    doc = {"ok": reply.ok, "message": reply.message, "seq": reply.seq}
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode()


class ControlClient:
    """What audit-web asks of the daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def access(
        self,
        actor: str,
        role: str,
        action: str,
        session: str | None = None,
        detail: str = "",
        client: str = "",
        ok: bool = True,
    ) -> ControlReply:
        """Log an access; `ok` False: it was asked for and refused."""
        return ask(
            self.path,
            {
                "op": "access",
                "actor": actor,
                "role": role,
                "action": action,
                "session": session,
                "detail": detail,
                "client": client,
                "ok": ok,
            },
        )

    def terminate(
        self, session: str, actor: str, reason: str, client: str = ""
    ) -> ControlReply:
        return ask(
            self.path,
            {
                "op": "terminate",
                "session": session,
                "actor": actor,
                "reason": reason,
                "client": client,
            },
        )

    def unlock(self, user: str, actor: str, client: str = "") -> ControlReply:
        """Let `user` in again after a lock rule locked them."""
        return ask(
            self.path, {"op": "unlock", "user": user, "actor": actor, "client": client}
        )
