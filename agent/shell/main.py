"""audit-shell: the bastion account's login program (sshd's ForceCommand).

It shows the hosts the person may reach and opens the one they pick
(agent/shell/login.py), or with --token-login serves the web terminal
(agent/shell/token_login.py). It never runs a shell and never passes a
command on. This module loads neither the terminal parser (pyte) nor the
store writer (tinydb): tests/test_layout.py holds it to that.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
import syslog
import time
from pathlib import Path

from agent.exits import ExitStatus, run_main
from agent.intent_file import client_addr_from
from agent.inventory import (
    DEFAULT_SHELL_CONFIG,
    InventoryError,
    groups_of,
    load_shell_config,
)
from agent.locks import refusal
from agent.shell import Refused
from agent.shell.connect import log_line
from agent.shell.login import Shell
from agent.shell.relay import ShellSignals, Timers
from agent.version import add_version_option

PROG = "audit-shell"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The bastion account's host menu (sshd ForceCommand)."
    )
    add_version_option(parser)
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_SHELL_CONFIG,
        metavar="FILE",
        help=f"settings and inventory (default {DEFAULT_SHELL_CONFIG})",
    )
    parser.add_argument(
        "--token-login",
        action="store_true",
        help="the web terminal: ask for an audit-web token, open its host (no menu)",
    )
    return parser


REFUSED_COMMANDS = (
    "this account only offers the host menu; commands, scp, sftp and rsync are refused"
)


def serve(args: argparse.Namespace) -> int:
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    if command is not None and not args.token_login:
        return serve_command(args, command)
    if not (os.isatty(0) and os.isatty(1)):
        raise Refused("this account needs a terminal (ssh -t)")
    if args.token_login:
        from agent.shell.token_login import TokenLoginError, token_login

        try:
            return token_login(args.config)
        except TokenLoginError as e:
            raise Refused(str(e)) from e
    config = load_shell_config(args.config)
    entry = pwd.getpwuid(os.getuid())
    user = entry.pw_name
    locked = refusal(config.settings.locks_dir, user)
    if locked:
        raise Refused(locked)
    client_addr = client_addr_from(os.environ.get("SSH_CONNECTION"))
    settings = config.settings
    now = time.monotonic()
    timers = Timers.starting(
        now, settings.idle_timeout_s, settings.warn_before_s, settings.max_session_s
    )
    log_line(f"{user} from {client_addr or '?'}: host menu")
    with ShellSignals() as signals:
        shell = Shell(
            config=config,
            user=user,
            home=Path(entry.pw_dir),
            client_addr=client_addr,
            signals=signals,
            timers=timers,
            targets=tuple(config.targets_for(user, groups_of(user))),
            environ=dict(os.environ),
        )
        return shell.run()


def serve_command(args: argparse.Namespace, command: str) -> int:
    """A command instead of a login: scp and sftp where a grant allows them."""
    from agent.shell.transfer_paths import routes_for
    from agent.shell.transfers import is_transfer, serve_transfer

    if not is_transfer(command):
        raise Refused(REFUSED_COMMANDS)
    try:
        config = load_shell_config(args.config)
    except InventoryError as e:  # nothing can be granted: refused, as always
        log_line(f"transfer refused, no usable configuration: {e}")
        raise Refused(REFUSED_COMMANDS) from e
    user = pwd.getpwuid(os.getuid()).pw_name
    targets = config.targets_for(user, groups_of(user))
    if not routes_for(targets):
        raise Refused(REFUSED_COMMANDS)
    client_addr = client_addr_from(os.environ.get("SSH_CONNECTION"))
    log_line(f"{user} from {client_addr or '?'}: transfer {command[:200]!r}")
    return serve_transfer(command, config.settings, targets, user, client_addr)


def main(argv: list[str] | None = None) -> int:
    # Before anything else: no key may interrupt audit-shell into anything.
    for sig in ShellSignals.IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_AUTHPRIV)

    def body() -> int:
        args = build_parser().parse_args(argv)
        try:
            return serve(args)
        except Refused as e:
            command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
            log_line(f"refused: {e} ({command!r:.200})")
            raise

    def unexpected(e: BaseException) -> str:
        # Never a traceback: it would show internals.
        log_line(f"internal error: {type(e).__name__}: {e}")
        return "internal error; logging out"

    return run_main(
        PROG, body, ctrl_c_status=ExitStatus.ERROR, on_unexpected=unexpected
    )


if __name__ == "__main__":
    sys.exit(main())
