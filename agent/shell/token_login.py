"""`audit-shell --token-login`: the web terminal's program (shellinaboxd service).

It asks for the one-time token audit-web gave the person, hands it to
audit-web's redemption socket (web/redeem.py), and on success opens the
token's host and account with the tagged ssh, relayed like audit-shell's
(agent/shell/relay.py). audit-web, not this program, writes the connection record
that names the web user: this runs as the terminal's shared service account,
which must not be able to say whose session it is. Any failure: one line,
then exit, and shellinaboxd closes the terminal. No shell is ever run.
"""

from __future__ import annotations

import os
import pwd
import select
import time
from pathlib import Path

from agent import AgentError
from agent.exits import ExitStatus
from agent.inventory import Target
from agent.locks import refusal
from agent.redemption import redeem
from agent.shell.connect import log_line, managed_known_hosts, open_session
from agent.shell.relay import (
    Outcome,
    ShellSignals,
    Timers,
    notice,
    terminal_mode,
    write_all,
)
from agent.web_config import load_web_config

TOKEN_PROMPT_TIMEOUT_S = 120.0
TOKEN_MAX_CHARS = 100
BANNER = "bastion web terminal: type the one-time token from the sign-in page.\r\n"
PROMPT = "Token: "
_ERASE = (b"\x7f", b"\x08")
_GIVE_UP = (b"\x03", b"\x04")  # Ctrl-C, Ctrl-D


class TokenLoginError(AgentError):
    """The token was refused, or the session cannot be opened."""


def read_token(fd_in: int, fd_out: int, timeout_s: float) -> str:
    """A line typed without echo (a `*` per key); TokenLoginError if abandoned."""
    typed = bytearray()
    deadline = time.monotonic() + timeout_s
    with terminal_mode(fd_in, "menu"):
        write_all(fd_out, (BANNER + PROMPT).encode())
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd_in], [], [], max(0.0, left))
            if not ready:
                raise TokenLoginError("no token typed in time")
            data = os.read(fd_in, 256)
            if not data:
                raise TokenLoginError("the terminal closed")
            for byte in (data[i : i + 1] for i in range(len(data))):
                if byte in (b"\r", b"\n"):
                    write_all(fd_out, b"\r\n")
                    return typed.decode("ascii", "replace")
                if byte in _GIVE_UP:
                    raise TokenLoginError("no token typed")
                if byte in _ERASE:
                    if typed:
                        del typed[-1]
                        write_all(fd_out, b"\b \b")
                elif (byte.isalnum() or byte in (b"-", b" ")) and len(
                    typed
                ) < TOKEN_MAX_CHARS:
                    typed += byte
                    write_all(fd_out, b"*")


def find_target(targets: list[Target], host: str, account: str) -> Target:
    for target in targets:
        if (target.host.name, target.account.name) == (host, account):
            return target
    raise TokenLoginError(f"{account}@{host} is not in this bastion's inventory")


def token_login(config_path: Path, fd_in: int = 0, fd_out: int = 1) -> int:
    """Serve one web terminal: token, then the session; the exit status."""
    config = load_web_config(config_path)
    settings = config.shell.settings
    entry = pwd.getpwuid(os.getuid())
    # shellinaboxd's variables: X-Real-IP as the TLS proxy set it (README),
    # else the peer it saw. It listens on 127.0.0.1, so only the proxy (or a
    # local program) can set the header.
    peer = os.environ.get("SHELLINABOX_REALIP") or os.environ.get(
        "SHELLINABOX_PEERNAME"
    )
    client = (peer or "?")[:100]
    typed = read_token(fd_in, fd_out, TOKEN_PROMPT_TIMEOUT_S)
    reply = redeem(config.web.redeem_socket, typed, client)
    if not reply.ok:
        log_line(f"token refused for {client}: {reply.message}")
        raise TokenLoginError(f"token refused: {reply.message}")
    locked = refusal(settings.locks_dir, reply.web_user)
    if locked:
        log_line(f"{reply.web_user} from {client}: {locked}")
        raise TokenLoginError(locked)
    targets = [
        Target(host, account)
        for host in config.shell.hosts
        for account in host.accounts
    ]
    target = find_target(targets, reply.host, reply.account)
    known_hosts = managed_known_hosts(settings.known_hosts, Path(entry.pw_dir))
    log_line(f"{reply.web_user} from {client} -> {target.label} session {reply.tag}")
    notice(
        fd_out, f"{reply.web_user}: connecting to {target.label} (session {reply.tag})"
    )
    now = time.monotonic()
    timers = Timers.starting(
        now, settings.idle_timeout_s, settings.warn_before_s, settings.max_session_s
    )
    with ShellSignals() as signals, terminal_mode(fd_in, "raw"):
        result = open_session(
            settings,
            target,
            reply.tag,
            known_hosts,
            dict(os.environ),
            fd_in,
            fd_out,
            timers,
            signals,
        )
    log_line(f"{reply.web_user}: session {reply.tag} ended: {result.outcome.value}")
    if result.outcome is Outcome.NOT_AUDITED:
        notice(fd_out, f"{target.label}: not audited, so closed")
        return ExitStatus.ERROR
    notice(fd_out, f"{target.label}: connection closed")
    return ExitStatus.SUCCESS
