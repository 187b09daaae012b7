"""Connection records ("intents"): who asked audit-shell for which host.

audit-shell runs as the bastion user and cannot write the root-only store, so
before it starts ssh it drops `<tag>.json` into a spool directory
(default /var/spool/bastion-audit/intents, root's, mode 1733: anyone may
create a file there, nobody may list it or touch another's file). This module
is the file's format: audit-shell and audit-web write it (write_intent), the
agent's linker (agent/daemon/intents.py) reads it (parse_intent), taking the
bastion user from the file's *owner*, never from its text.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.records import Origin, Session, SessionStatus
from tracer.tags import valid_tag

SUFFIX = ".json"
INTENT_MAX_BYTES = 4096
_FIELD_MAX_CHARS = 256
_PROOF_RE = re.compile(r"[0-9a-f]{32}")


class IntentError(AgentError):
    """A connection record that cannot be written or read."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A connection audit-shell is about to open, as the agent trusts it."""

    tag: str
    uid: int  # the spool file's owner: the one field the agent trusts
    bastion_user: str
    inventory_host: str
    address: str
    port: int
    remote_account: str
    client_addr: str | None
    created_at: float
    origin: Origin = Origin.AUDIT_SHELL
    ssh_user: str = ""  # whose ssh to link, when not the bastion user's
    proof: str = ""  # the secret its paramiko recording's start line carries

    def to_session(self, session_id: str) -> Session:
        return Session(
            id=session_id,
            tag=self.tag,
            bastion_user=self.bastion_user,
            remote_user=self.remote_account,
            host=self.address,
            port=self.port,
            ssh_pid=0,
            tty="",
            started_at=self.created_at,
            status=SessionStatus.PENDING,
            origin=self.origin,
            client_addr=self.client_addr,
            inventory_host=self.inventory_host,
            remote_account=self.remote_account,
            runner=self.ssh_user,
            proof=self.proof,
        )


def new_proof() -> str:
    """A per-session secret: the connection record and the recording both carry it.

    The agent takes a paramiko recording whose process is gone as the
    record's only if the two match (agent/daemon/spool.py).
    """
    return secrets.token_hex(16)


def client_addr_from(ssh_connection: str | None) -> str | None:
    """The client's address from sshd's SSH_CONNECTION ("ip port ip port")."""
    words = (ssh_connection or "").split()
    return words[0][:_FIELD_MAX_CHARS] if len(words) == 4 else None


def write_intent(
    spool: Path,
    tag: str,
    inventory_host: str,
    address: str,
    port: int,
    remote_account: str,
    client_addr: str | None,
    web_user: str | None = None,
    ssh_user: str | None = None,
    proof: str | None = None,
) -> Path:
    """Create `spool/<tag>.json` for our own uid; FileExistsError if taken.

    O_EXCL and O_NOFOLLOW: a name someone else created (even a symlink) is
    never written through; the caller picks another tag. `web_user` and
    `ssh_user`: audit-web's record of a web-token session.
    """
    if not valid_tag(tag):
        raise IntentError(f"invalid tag {tag!r}")
    fields: dict[str, Any] = {
        "v": 1,
        "tag": tag,
        "created_at": round(time.time(), 6),
        "inventory_host": inventory_host,
        "address": address,
        "port": port,
        "remote_account": remote_account,
        "client_addr": client_addr,
    }
    if web_user is not None:
        fields.update(origin=Origin.WEB_TOKEN, web_user=web_user, ssh_user=ssh_user)
    if proof is not None:
        fields["proof"] = proof
    data = json.dumps(fields, separators=(",", ":")).encode()
    path = spool / f"{tag}{SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)  # one write, far below PIPE_BUF-like limits
    finally:
        os.close(fd)
    return path


def parse_intent(
    data: bytes,
    tag: str,
    uid: int,
    user: str,
    now: float,
    may_name_user: bool = False,
) -> Intent:
    """Check a spool file's text against its name; IntentError if unusable.

    `may_name_user`: the file's owner is trusted to write web-token records.
    The record's `created_at`, never the file's mtime (its owner sets that),
    and never later than `now`; a record without one was made by `now`.
    """
    try:
        fields = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntentError(f"not JSON ({e})") from e
    if not isinstance(fields, dict) or fields.get("v") != 1:
        raise IntentError("not a version 1 connection record")
    if fields.get("tag") != tag:
        raise IntentError(f"its tag {fields.get('tag')!r} is not its name's")

    def text(key: str, optional: bool = False) -> Any:
        value = fields.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > _FIELD_MAX_CHARS:
            raise IntentError(f"bad {key}: {value!r:.80}")
        if not value.isprintable():
            raise IntentError(f"bad {key}: {value!r:.80}")
        return value

    created_at = fields.get("created_at", now)
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)):
        raise IntentError(f"bad created_at: {created_at!r:.80}")
    if not 0 < created_at < math.inf:
        raise IntentError(f"bad created_at: {created_at!r:.80}")
    proof = fields.get("proof", "")
    if not isinstance(proof, str) or (proof and not _PROOF_RE.fullmatch(proof)):
        raise IntentError(f"bad proof: {proof!r:.80}")
    port = fields.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise IntentError(f"bad port: {port!r:.80}")
    origin, ssh_user = Origin.AUDIT_SHELL, ""
    if "web_user" in fields or "origin" in fields:
        if not may_name_user:
            raise IntentError(f"uid {uid} may not write web-token records")
        if fields.get("origin") != Origin.WEB_TOKEN:
            raise IntentError(f"bad origin: {fields.get('origin')!r:.80}")
        origin, user, ssh_user = Origin.WEB_TOKEN, text("web_user"), text("ssh_user")
    return Intent(
        origin=origin,
        ssh_user=ssh_user,
        tag=tag,
        uid=uid,
        bastion_user=user,
        inventory_host=text("inventory_host"),
        address=text("address"),
        port=port,
        remote_account=text("remote_account"),
        client_addr=text("client_addr", optional=True),
        created_at=min(float(created_at), now),
        proof=proof,
    )


def user_name(uid: int) -> str:
    """The name session_tracker.sh would give the same uid (`id -nu`)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"
