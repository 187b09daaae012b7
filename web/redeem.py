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

One JSON line each way. Requests are served one at a time, each with a
deadline, which also serialises redemptions within this process.
"""

from __future__ import annotations

import json
import logging
import pwd
import secrets
import socket
import socketserver
import time
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.intent_file import write_intent
from agent.inventory import Target, groups_of
from agent.redemption import IO_TIMEOUT_S, RedeemError, Reply, read_line
from agent.unix_service import ServiceServer, UnixService, peer_credentials
from agent.web_config import WebConfig
from web import WebError
from web.tokens import TokenStore, Verdict

log = logging.getLogger(__name__)

TAG_TRIES = 5
WEB_ORIGIN = "web-token"


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
            token, client = str(fields["token"]), str(fields["client"])[:100]
        except (ValueError, KeyError, TypeError):
            return Reply(False, "bad request")
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
        tag = self._record(grant.web_user, target, client)
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

    def _record(self, web_user: str, target: Target, client: str) -> str:
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
                )
            except FileExistsError:
                continue
            return tag
        raise RedeemError(f"no free tag after {TAG_TRIES} tries")


class _Handler(socketserver.BaseRequestHandler):
    server: ServiceServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(IO_TIMEOUT_S)
        _, uid = peer_credentials(conn)
        redeemer: Redeemer = self.server.context
        try:
            request = read_line(conn)
            try:
                reply = redeemer.handle(request, uid)
            except AgentError as e:  # the store or the spool: say so, keep serving
                log.error("redeem: %s", e)
                reply = Reply(False, "audit-web cannot serve tokens now")
            except OSError as e:
                log.error("redeem: cannot record the connection: %s", e)
                reply = Reply(False, "audit-web cannot record the connection")
            conn.sendall((json.dumps(_as_dict(reply)) + "\n").encode())
        except OSError:
            return  # the terminal went away: its problem, not ours


def _as_dict(reply: Reply) -> dict[str, Any]:
    return {f: getattr(reply, f) for f in Reply.__slots__}


class RedeemServer(UnixService):
    """The socket, served by one owned thread; a context manager."""

    def __init__(self, path: Path, redeemer: Redeemer) -> None:
        # Anyone may connect; SO_PEERCRED decides who is served.
        super().__init__(
            path, _Handler, redeemer, "redeem", 0o666, error_class=RedeemError
        )


def _uid_of(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError as e:
        raise WebError(f"terminal_user {user!r} is not an account here") from e
