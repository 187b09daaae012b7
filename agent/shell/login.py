"""One bastion login: the host menu, then a connection, until the person leaves.

It records each connection in the agent's spool (agent/intent_file.py)
before it starts a tagged ssh, relays the session (agent/shell/relay.py) and
comes back to the menu when ssh ends. Leaving the menu, a timeout or a lost
connection ends the login: sshd runs nothing after a ForceCommand.
"""

from __future__ import annotations

import os
import select
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.exits import ExitStatus
from agent.intent_file import write_intent
from agent.inventory import ShellConfig, Target
from agent.locks import refusal
from agent.shell.connect import (
    backend_of,
    log_line,
    managed_known_hosts,
    new_tag,
    open_session,
)
from agent.shell.menu import (
    ENTER,
    INTERRUPT,
    LEAVE,
    KeyDecoder,
    MenuState,
    View,
    render,
)
from agent.shell.relay import (
    Outcome,
    RelayResult,
    ShellSignals,
    Timers,
    notice,
    terminal_mode,
    window_size,
    write_all,
)

TAG_TRIES = 5
ENTER_MENU_SCREEN = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE_MENU_SCREEN = "\x1b[?25h\x1b[?1049l"


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

    def run(self) -> ExitStatus:
        message = ""
        state = MenuState(self.targets)
        if not self.targets:
            message = "no host is open to you here; ask your administrator"
        while True:
            choice, state = self.choose(state, message)
            if not isinstance(choice, Target):
                log_line(f"{self.user} left ({choice})")
                return ExitStatus.SUCCESS
            result = self.connect(choice)
            if isinstance(result, str):
                message = result
                continue
            message = self.describe(choice, result)
            if result.outcome in (Outcome.IDLE, Outcome.TIME_LIMIT, Outcome.HANGUP):
                log_line(f"{self.user} logged out: {result.outcome.value}")
                return ExitStatus.SUCCESS

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
        locked = refusal(settings.locks_dir, self.user)
        if locked:
            log_line(f"{self.user}: not connecting to {target.label}: {locked}")
            return f"not connecting: {locked}"
        try:
            tag = self._record(target)
            known_hosts = managed_known_hosts(settings.known_hosts, self.home)
        except OSError as e:
            where = f" {e.filename}" if e.filename else ""
            log_line(f"{self.user}: cannot record or prepare {target.label}: {e}")
            return f"not connecting: cannot record it ({e.strerror or e}{where})"
        log_line(
            f"{self.user} from {self.client_addr or '?'} -> {target.label} "
            f"({target.host.address}:{target.host.port}) session {tag} "
            f"via {backend_of(settings, target)}"
        )
        notice(self.fd_out, f"connecting to {target.label} (session {tag})")
        self.timers.input(time.monotonic())
        with terminal_mode(self.fd_in, "raw"):
            result = self.launch(target, tag, known_hosts)
        log_line(f"{self.user}: session {tag} ended: {result.outcome.value}")
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
