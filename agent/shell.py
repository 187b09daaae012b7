"""audit-shell: the bastion account's login program (sshd's ForceCommand).

It shows the hosts the person may reach, records each connection in the
agent's spool (agent/intents.py) before it starts a tagged ssh, relays the
session (agent/relay.py) and comes back to the menu when ssh ends. Leaving
the menu, a timeout, a lost connection or any unexpected error ends
audit-shell, and with it the login: sshd runs nothing after a ForceCommand.
It never runs a shell and never passes a command on.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import pwd
import re
import secrets
import select
import signal
import struct
import sys
import syslog
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import AgentError
from agent.intents import client_addr_from, write_intent
from agent.inventory import (
    DEFAULT_SHELL_CONFIG,
    ShellConfig,
    ShellSettings,
    Target,
    groups_of,
    load_shell_config,
)
from agent.menu import ENTER, INTERRUPT, LEAVE, KeyDecoder, MenuState, View, render
from agent.paramiko_relay import run_paramiko
from agent.relay import (
    Outcome,
    RelayResult,
    ShellSignals,
    Timers,
    notice,
    run_in_pty,
    terminal_mode,
    window_size,
    write_all,
)

PROG = "audit-shell"
CHILD_PATH = "/usr/bin:/bin"
TAG_TRIES = 5
_TERM_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}")
ENTER_MENU_SCREEN = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE_MENU_SCREEN = "\x1b[?25h\x1b[?1049l"


class ShellExit(enum.IntEnum):
    SUCCESS = 0  # left the menu, or a timeout logged the person out
    ERROR = 1  # an unexpected error: logged out all the same
    BAD_CONFIG = 2
    REFUSED = 3  # a command, scp, sftp, rsync, or no terminal


class ShellError(AgentError):
    """audit-shell cannot serve this login."""


class Refused(ShellError):
    """A request the bastion account does not serve."""


def new_tag(now: float | None = None) -> str:
    """A fresh session tag: `as-20261128T105300-1f2e3d4c`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"as-{stamp}-{secrets.token_hex(4)}"


def ssh_command(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that open `target` with `tag` (pure).

    No ssh_config is read (-F /dev/null): a ProxyCommand or LocalCommand there
    would run a program nobody traces. The escape character is off, so `~C`
    cannot add forwardings from the bastion and `~^Z` cannot stop ssh.
    """
    host, account = target.host, target.account
    argv = [
        str(settings.ssh),
        "-F",
        "/dev/null",
        "-t",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "HashKnownHosts=no",
        "-o",
        "EscapeChar=none",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "ForwardAgent=no",
        "-o",
        "ForwardX11=no",
        "-o",
        "PermitLocalCommand=no",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        f"ConnectTimeout={max(1, round(settings.connect_timeout_s))}",
        "-o",
        "LogLevel=ERROR",
    ]
    if settings.tag_style == "patched":
        argv += ["-Z", tag]
    else:
        argv += ["-o", f"SetEnv=AUDIT_SESSION={tag}"]
    env = {
        "PATH": CHILD_PATH,
        "HOME": environ.get("HOME", "/"),
        "USER": environ.get("USER", ""),
        "LOGNAME": environ.get("LOGNAME", ""),
        "LANG": "C.UTF-8",
    }
    term = environ.get("TERM", "")
    env["TERM"] = term if _TERM_RE.fullmatch(term) else "xterm"
    if account.key_file is not None:
        argv += [
            "-i",
            str(account.key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
        ]
    else:
        argv += [
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
        ]
        # sshpass -e: the password is in the child's environment only, which
        # only its own user and root can read; never on a command line.
        argv = [str(settings.sshpass), "-e", *argv]
        assert account.password is not None
        env["SSHPASS"] = account.password
    argv += ["-p", str(host.port), "-l", account.name, "--", host.address]
    return argv, env


def backend_of(settings: ShellSettings, target: Target) -> str:
    """`ssh` or `paramiko`: the host's own choice, else the global one."""
    return target.host.backend or settings.backend


def open_session(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
    fd_in: int,
    fd_out: int,
    timers: Timers,
    signals: ShellSignals,
) -> RelayResult:
    """Open the session with the host's backend and relay it to the end.

    Every way in (the menu, the web terminal's --token-login) goes through
    here, so each gets both backends: the ssh binary (traced by the agent) or
    paramiko (recording itself).
    """
    if backend_of(settings, target) == "paramiko":
        return run_paramiko(
            settings, target, tag, known_hosts, environ, fd_in, fd_out, timers, signals
        )
    argv, env = ssh_command(settings, target, tag, known_hosts, environ)
    return run_in_pty(argv, env, fd_in, fd_out, timers, signals, settings.audit_wait_s)


def managed_known_hosts(setting: str, home: Path) -> Path:
    """The known_hosts file audit-shell keeps for this user, created 0600."""
    path = home / setting[2:] if setting.startswith("~/") else Path(setting)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(path, flags, 0o600))
    return path


@dataclass
class Shell:
    config: ShellConfig
    user: str
    home: Path
    client_addr: str | None
    signals: ShellSignals
    timers: Timers
    targets: tuple[Target, ...]
    environ: dict[str, str] = field(default_factory=dict)
    fd_in: int = 0
    fd_out: int = 1

    def run(self) -> ShellExit:
        message = ""
        state = MenuState(self.targets)
        if not self.targets:
            message = "no host is open to you here; ask your administrator"
        while True:
            choice, state = self.choose(state, message)
            if not isinstance(choice, Target):
                _log(f"{self.user} left ({choice})")
                return ShellExit.SUCCESS
            result = self.connect(choice)
            if isinstance(result, str):
                message = result
                continue
            message = self.describe(choice, result)
            if result.outcome in (Outcome.IDLE, Outcome.TIME_LIMIT, Outcome.HANGUP):
                _log(f"{self.user} logged out: {result.outcome.value}")
                return ShellExit.SUCCESS

    def choose(self, state: MenuState, message: str) -> tuple[Target | str, MenuState]:
        """The menu, until a target is picked or the person leaves (why)."""
        decoder = KeyDecoder()
        with terminal_mode(self.fd_in, "menu"):
            self._write(ENTER_MENU_SCREEN)
            try:
                self._draw(state, message)
                while True:
                    now = time.monotonic()
                    warning, cut = self.timers.check(now)
                    if cut is not None or self.signals.hangup:
                        return (cut.value if cut else "hangup"), state
                    if warning:
                        message = warning
                        self._draw(state, message)
                    if self.signals.winch:
                        self.signals.winch = False
                        self._draw(state, message)
                    ready, _, _ = select.select(
                        [self.fd_in, self.signals.fd],
                        [],
                        [],
                        self.timers.next_check_s(now),
                    )
                    if self.signals.fd in ready:
                        self.signals.drain()
                    if self.fd_in not in ready:
                        continue
                    try:
                        data = os.read(self.fd_in, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        return "end of input", state
                    self.timers.input(time.monotonic())
                    for key in decoder.feed(data):
                        if key == LEAVE:
                            return "ctrl-d", state
                        if key == ENTER:
                            target = state.chosen()
                            if target is not None:
                                return target, state
                            message = "nothing to connect to: change the filter"
                            continue
                        if key == INTERRUPT:
                            message = "Ctrl-C does nothing here; Ctrl-D logs you out"
                        state = state.key(key)
                    self._draw(state, message)
            finally:
                self._write(LEAVE_MENU_SCREEN)

    def connect(self, target: Target) -> RelayResult | str:
        """Record the connection, then run the tagged ssh in a relayed pty.

        A string says why nothing was started.
        """
        settings = self.config.settings
        try:
            tag = self._record(target)
            known_hosts = managed_known_hosts(settings.known_hosts, self.home)
        except OSError as e:
            where = f" {e.filename}" if e.filename else ""
            _log(f"{self.user}: cannot record or prepare {target.label}: {e}")
            return f"not connecting: cannot record it ({e.strerror or e}{where})"
        _log(
            f"{self.user} from {self.client_addr or '?'} -> {target.label} "
            f"({target.host.address}:{target.host.port}) session {tag} "
            f"via {backend_of(settings, target)}"
        )
        notice(self.fd_out, f"connecting to {target.label} (session {tag})")
        self.timers.input(time.monotonic())
        with terminal_mode(self.fd_in, "raw"):
            result = self.launch(target, tag, known_hosts)
        _log(f"{self.user}: session {tag} ended: {result.outcome.value}")
        return result

    def launch(self, target: Target, tag: str, known_hosts: Path) -> RelayResult:
        return open_session(
            self.config.settings,
            target,
            tag,
            known_hosts,
            self.environ,
            self.fd_in,
            self.fd_out,
            self.timers,
            self.signals,
        )

    def _record(self, target: Target) -> str:
        """Write the connection record under a fresh tag; the tag."""
        for _ in range(TAG_TRIES):
            tag = new_tag()
            try:
                write_intent(
                    self.config.settings.intents_dir,
                    tag,
                    inventory_host=target.host.name,
                    address=target.host.address,
                    port=target.host.port,
                    remote_account=target.account.name,
                    client_addr=self.client_addr,
                )
            except FileExistsError:
                continue  # someone holds that name: take another tag
            return tag
        raise FileExistsError(f"no free tag after {TAG_TRIES} tries")

    @staticmethod
    def describe(target: Target, result: RelayResult) -> str:
        if result.outcome is Outcome.NOT_AUDITED:
            return f"{target.label}: not audited, so closed; try again later"
        if result.status == 127:
            return f"{target.label}: ssh could not be started"
        if result.status not in (0, None):
            return f"{target.label}: connection ended with status {result.status}"
        return f"{target.label}: connection closed"

    def _draw(self, state: MenuState, message: str) -> None:
        rows, cols, _, _ = struct.unpack("HHHH", window_size(self.fd_in))
        who = f"{self.user}" + (f" from {self.client_addr}" if self.client_addr else "")
        view = View(self.config.settings.title, who, message, rows or 24, cols or 80)
        self._write(render(state, view))

    def _write(self, text: str) -> None:
        write_all(self.fd_out, text.encode("utf-8", "replace"))


def _log(message: str) -> None:
    """One line to syslog (authpriv), next to sshd's own lines."""
    with contextlib.suppress(OSError):
        syslog.syslog(syslog.LOG_INFO, message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The bastion account's host menu (sshd ForceCommand)."
    )
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


def serve(args: argparse.Namespace) -> ShellExit:
    if "SSH_ORIGINAL_COMMAND" in os.environ:
        raise Refused(
            "this account only offers the host menu; commands, scp, sftp and "
            "rsync are refused"
        )
    if not (os.isatty(0) and os.isatty(1)):
        raise Refused("this account needs a terminal (ssh -t)")
    if args.token_login:
        from agent.token_login import TokenLoginError, token_login

        try:
            return ShellExit(token_login(args.config))
        except TokenLoginError as e:
            raise Refused(str(e)) from e
    config = load_shell_config(args.config)
    entry = pwd.getpwuid(os.getuid())
    user = entry.pw_name
    client_addr = client_addr_from(os.environ.get("SSH_CONNECTION"))
    settings = config.settings
    now = time.monotonic()
    timers = Timers.starting(
        now, settings.idle_timeout_s, settings.warn_before_s, settings.max_session_s
    )
    _log(f"{user} from {client_addr or '?'}: host menu")
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


def main(argv: list[str] | None = None) -> int:
    # Before anything else: no key may interrupt audit-shell into anything.
    for sig in ShellSignals.IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    try:
        args = build_parser().parse_args(argv)
        return serve(args)
    except Refused as e:
        _log(f"refused: {e} ({os.environ.get('SSH_ORIGINAL_COMMAND', '')!r:.200})")
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return ShellExit.REFUSED
    except AgentError as e:  # the configuration or inventory
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return ShellExit.BAD_CONFIG
    except SystemExit:
        raise
    except BaseException as e:  # never a traceback: it would show internals
        _log(f"internal error: {type(e).__name__}: {e}")
        print(f"{PROG}: error: internal error; logging out", file=sys.stderr)
        return ShellExit.ERROR


if __name__ == "__main__":
    sys.exit(main())
