"""Token redemption over a unix socket: audit-web's side.

The wire format and the terminal's client are agent/redemption.py.

`audit-shell --token-login` runs as shellinaboxd's fixed service account and
must not read the token store, nor be trusted to say whose session it opens.
So it only hands the typed token to audit-web over this socket. audit-web
asks the kernel who is calling (SO_PEERCRED: only the configured terminal
account may redeem), uses the token once (web/tokens.py), checks the grant
against the inventory again, and writes the connection record for the agent
itself (agent/intent_file.py), under its own uid, naming the web user as the
bastion user and the terminal account as the one whose ssh to link. The
reply tells audit-shell which tag, host and account to open.

One JSON line each way. The caller is checked before its request is read;
each request has its own thread and one deadline for all of it, so a slow
caller holds up nobody else. Using a token is one SQLite transaction
(web/tokens.py), so redemptions served at once cannot use a token twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import secrets
import socket
import socketserver
import struct
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from agent import AgentError
from agent.intent_file import write_intent
from agent.inventory import Target, groups_of
from agent.redemption import IO_TIMEOUT_S, RedeemError, Reply, read_line
from agent.web_config import WebConfig
from web import WebError
from web.tokens import TokenStore, Verdict

log = logging.getLogger(__name__)

TAG_TRIES = 5
MAX_REQUESTS = 8  # redemptions served at once; more are refused at once
WEB_ORIGIN = "web-token"
_UCRED = struct.Struct("3i")  # pid, uid, gid
_PROOF_RE = re.compile(r"[0-9a-f]{32}")
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f.:]{1,64}")  # IPv4 or IPv6, nothing else


def client_text(text: str) -> str:
    """The browser's address the terminal sends, as logs and records may hold it.

    It comes from X-Real-IP, which a browser sets itself where no proxy does.
    """
    text = text[:100]
    return text if _ADDRESS_RE.fullmatch(text) else ascii(text)[1:-1][:100]


def new_web_tag(now: float | None = None) -> str:
    """`aw-20261128T105300-1f2e3d4c`: audit-web's tags, apart from audit-shell's."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"aw-{stamp}-{secrets.token_hex(4)}"


class Redeemer:
    """What one request gets, apart from the socket (so tests can call it)."""

    def __init__(self, config: WebConfig, store: TokenStore) -> None:
        self.config = config
        self.store = store
        self.terminal_uid = _uid_of(config.web.terminal_user)

    def handle(self, request: bytes, peer_uid: int) -> Reply:
        if peer_uid != self.terminal_uid:
            log.warning("redeem: refused uid %d (not the terminal account)", peer_uid)
            return Reply(False, "only the web terminal may redeem tokens")
        try:
            fields: Any = json.loads(request)
            token, client = str(fields["token"]), client_text(str(fields["client"]))
            proof = str(fields.get("proof") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            return Reply(False, "bad request")
        if not _PROOF_RE.fullmatch(proof):
            proof = ""  # an older terminal: the recording's process must show
        result = self.store.redeem(token, client)
        grant = result.grant
        if result.verdict is not Verdict.OK or grant is None:
            log.warning("token refused for %s: %s", client, result.verdict.value)
            return Reply(False, result.verdict.value)
        target = self._target(grant.web_user, grant.host, grant.account)
        if target is None:
            log.warning(
                "token of %s for %s@%s: no longer granted",
                grant.web_user,
                grant.account,
                grant.host,
            )
            return Reply(False, "that host is no longer open to you")
        tag = self._record(grant.web_user, target, client, proof)
        log.info(
            "token of %s redeemed from %s: %s@%s, session %s",
            grant.web_user,
            client,
            grant.account,
            grant.host,
            tag,
        )
        return Reply(True, "ok", tag, grant.web_user, grant.host, grant.account)

    def _target(self, user: str, host: str, account: str) -> Target | None:
        for target in self.config.shell.targets_for(user, groups_of(user)):
            if (target.host.name, target.account.name) == (host, account):
                return target
        return None

    def _record(self, web_user: str, target: Target, client: str, proof: str) -> str:
        """The agent's connection record, written as audit-web; the tag."""
        for _ in range(TAG_TRIES):
            tag = new_web_tag()
            try:
                write_intent(
                    self.config.shell.settings.intents_dir,
                    tag,
                    inventory_host=target.host.name,
                    address=target.host.address,
                    port=target.host.port,
                    remote_account=target.account.name,
                    client_addr=client or None,
                    web_user=web_user,
                    ssh_user=self.config.web.terminal_user,
                    proof=proof or None,
                )
            except FileExistsError:
                continue
            return tag
        raise RedeemError(f"no free tag after {TAG_TRIES} tries")


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        deadline = time.monotonic() + IO_TIMEOUT_S  # for the whole request
        try:
            request = read_line(conn, deadline)
            try:
                reply = self.server.redeemer.handle(request, peer_uid(conn))
            except AgentError as e:  # the store or the spool: say so, keep serving
                log.error("redeem: %s", e)
                reply = Reply(False, "audit-web cannot serve tokens now")
            except OSError as e:
                log.error("redeem: cannot record the connection: %s", e)
                reply = Reply(False, "audit-web cannot record the connection")
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            conn.sendall(_encode(reply))
        except OSError:
            return  # the terminal went away or was too slow: its problem


def peer_uid(conn: socket.socket) -> int:
    """Who is calling, as the kernel says (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _, uid, _ = _UCRED.unpack(creds)
    return int(uid)


def _encode(reply: Reply) -> bytes:
    return (json.dumps({f: getattr(reply, f) for f in Reply.__slots__}) + "\n").encode()


def _refuse(conn: socket.socket, message: str) -> None:
    """One short reply without waiting on the peer, then the server closes it."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(_encode(Reply(False, message)))


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per request, each with its deadline; the peer checked first.

    The check runs in the accepting thread, before a byte is read, so that a
    local account other than the terminal's costs no thread and holds up
    nobody; the terminal's own requests are served MAX_REQUESTS at a time.
    server_close() joins the request threads (block_on_close).
    """

    daemon_threads = False
    block_on_close = True
    redeemer: Redeemer

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        uid = peer_uid(request)
        if uid != self.redeemer.terminal_uid:
            log.warning("redeem: refused uid %d (not the terminal account)", uid)
            _refuse(request, "only the web terminal may redeem tokens")
            return False
        if not self._slots.acquire(blocking=False):
            log.warning(
                "redeem: %d requests at once already; refused one", MAX_REQUESTS
            )
            _refuse(request, "audit-web is busy; try again")
            return False
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class RedeemServer:
    """The socket, served by one owned thread; a context manager."""

    def __init__(self, path: Path, redeemer: Redeemer) -> None:
        self.path = path
        self.redeemer = redeemer
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RedeemServer:
        try:
            self.path.unlink()  # a socket left by a killed audit-web
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RedeemError(f"cannot replace {self.path}: {e.strerror}") from e
        try:
            server = _Server(str(self.path))
            # Anyone may connect; SO_PEERCRED decides who is served.
            os.chmod(self.path, 0o666)
        except OSError as e:
            raise RedeemError(f"cannot listen on {self.path}: {e.strerror}") from e
        server.redeemer = self.redeemer
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="redeem", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _uid_of(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError as e:
        raise WebError(f"terminal_user {user!r} is not an account here") from e
