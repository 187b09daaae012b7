"""Token redemption, the wire: one JSON line each way over a unix socket.

The web terminal's token login (agent/shell/token_login.py) sends the typed
token with `redeem`; audit-web (web/redeem.py) answers with a `Reply`. Both
sides share this module, so neither imports the other's program.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from agent import AgentError

REQUEST_MAX_BYTES = 1024
IO_TIMEOUT_S = 5.0


class RedeemError(AgentError):
    """The redemption service cannot be reached or answered nonsense."""


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    message: str
    tag: str = ""
    web_user: str = ""
    host: str = ""  # the inventory's host name
    account: str = ""


def redeem(path: Path, token: str, client: str, proof: str = "") -> Reply:
    """Ask audit-web to use `token` for a session from `client`.

    `proof`: the secret for the connection record (agent/intent_file.py).
    """
    fields = {"token": token[:200], "client": client[:200], "proof": proof[:64]}
    request = json.dumps(fields) + "\n"
    try:
        deadline = time.monotonic() + IO_TIMEOUT_S
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(IO_TIMEOUT_S)
            s.connect(str(path))
            s.sendall(request.encode())
            data = read_line(s, deadline)
    except OSError as e:
        raise RedeemError(f"cannot reach audit-web at {path}: {e.strerror or e}") from e
    try:
        fields = json.loads(data)
        return Reply(
            ok=fields["ok"] is True,
            message=str(fields["message"]),
            **{
                k: str(fields.get(k) or "")
                for k in ("tag", "web_user", "host", "account")
            },
        )
    except (ValueError, TypeError, KeyError) as e:
        raise RedeemError(f"audit-web at {path} answered nonsense") from e


def read_line(s: socket.socket, deadline: float | None = None) -> bytes:
    """One line of at most REQUEST_MAX_BYTES * 4, by `deadline` (monotonic).

    One deadline for the whole line, not a timeout per recv(): a peer that
    sends a byte now and then is cut off all the same. TimeoutError then.
    """
    if deadline is None:
        deadline = time.monotonic() + IO_TIMEOUT_S
    data = b""
    while b"\n" not in data and len(data) <= REQUEST_MAX_BYTES * 4:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no whole line in time")
        s.settimeout(left)
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]
