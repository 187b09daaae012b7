"""Deny before it runs: the line an Enter would submit, judged before it is sent.

audit-shell's paramiko child sees every key before the remote side does. It
keeps its own copy of the agent's terminal emulator (parsers/terminal.py's
CommandBuilder, fed what it relays), and on an Enter asks a copy of it what
the shell would accept if that Enter went out and the shell answered as
readline does (`\\r\\n ESC[?2004l`; a shell without those markers takes the
line feed). A line a deny rule matches is not sent: the Enter is withheld,
Ctrl-E Ctrl-U clear the line on the remote side (readline's end-of-line and
unix-line-discard), the person reads `command refused by rule NAME`, and an
empty Enter brings the shell's next prompt. The agent stores the `d` line of
the recording as a record of kind denied.

Imported by the paramiko child only: it loads pyte, which a login never does.
"""

from __future__ import annotations

import copy
import os
import pwd
import select
import time
from typing import Any

from agent.inventory import Target
from agent.rules import Rule, RuleSet, Subject, denied_by
from agent.shell.chunk_writer import ChunkWriter
from agent.shell.relay import write_all
from parsers.chunk_log import encode_denied
from parsers.events import Chunk, Denied, Direction, Resize
from parsers.terminal import CommandBuilder
from parsers.terminal_stream import TerminalStream

ENTER_KEYS = b"\r\n"
CLEAR_LINE = b"\x05\x15"  # readline: Ctrl-E end-of-line, Ctrl-U unix-line-discard
ACCEPT_ECHO = b"\r\n\x1b[?2004l"  # what readline prints when it accepts a line
SETTLE_S = 0.05  # the remote side is quiet this long: its echo has come
SETTLE_MAX_S = 0.5  # and never waited on longer than this
READ_BYTES = 65536


class DenyGate:
    """The emulator's view of the session, and the deny rules to judge it by."""

    def __init__(self, rules: RuleSet, subject: Subject, rows: int, cols: int) -> None:
        self.rules = rules
        self.subject = subject
        self.builder = CommandBuilder()
        self.builder.feed(Resize(time.time(), rows, cols, 0))
        self.offset = 0

    def _feed(self, direction: Direction, data: bytes) -> None:
        self.offset += 1  # offsets only order the events here
        self.builder.feed(Chunk(time.time(), direction, data, self.offset))

    def sent(self, keys: bytes) -> None:
        self._feed(Direction.INPUT, keys)

    def shown(self, output: bytes) -> None:
        self._feed(Direction.OUTPUT, output)

    def resized(self, rows: int, cols: int) -> None:
        self.offset += 1
        self.builder.feed(Resize(time.time(), rows, cols, self.offset))

    def judge_enter(self, enter: bytes) -> tuple[Rule, str] | None:
        """The deny rule the line this Enter would submit matches, with the line."""
        trial = _copy(self.builder)
        trial.feed(Chunk(time.time(), Direction.INPUT, enter, self.offset + 1))
        lines = trial.feed(
            Chunk(time.time(), Direction.OUTPUT, ACCEPT_ECHO, self.offset + 2)
        )
        for line in lines:
            subject = Subject(
                text=line.text,
                kind="command",
                bastion_user=self.subject.bastion_user,
                remote_user=self.subject.remote_user,
                hosts=self.subject.hosts,
                origin=self.subject.origin,
                when=time.time(),
            )
            rule = denied_by(self.rules.match(subject))
            if rule is not None:
                return rule, line.text
        return None


def _copy(builder: CommandBuilder) -> CommandBuilder:
    """A copy to try an Enter on. The stream holds pyte's generator, which cannot
    be copied: the copy gets a stream of its own on its copy of the screen (an
    escape sequence cut in the middle is not carried over)."""
    stream = builder.stream
    builder.stream = None  # type: ignore[assignment]
    try:
        trial = copy.deepcopy(builder)
    finally:
        builder.stream = stream
    trial.stream = TerminalStream(trial.screen)
    return trial


def split_at_enters(data: bytes) -> list[bytes]:
    """`data` cut after each Enter key, so each part holds at most one, at its end."""
    parts: list[bytes] = []
    start = 0
    for i, byte in enumerate(data):
        if byte in ENTER_KEYS:
            parts.append(data[start : i + 1])
            start = i + 1
    if start < len(data):
        parts.append(data[start:])
    return parts


class DenyRelay:
    """The paramiko relay's keys, through the gate: what is sent, what is refused."""

    def __init__(self, gate: DenyGate) -> None:
        self.gate = gate
        self.sent_at = 0.0  # monotonic: when keys last went out

    @classmethod
    def for_target(
        cls, rules: RuleSet, target: Target, rows: int, cols: int
    ) -> DenyRelay:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = f"uid:{os.getuid()}"
        subject = Subject(
            text="",
            bastion_user=user,
            remote_user=target.account.name,
            hosts=(target.host.address, target.host.name),
            origin="audit-shell",
        )
        return cls(DenyGate(rules, subject, rows, cols))

    def keys(
        self, data: bytes, channel: Any, writer: ChunkWriter, user_out: int
    ) -> None:
        """Relay `data`, each Enter only once the line it submits is judged."""
        for part in split_at_enters(data):
            if part[-1:] not in (b"\r", b"\n"):
                self._send(part, channel, writer)
                continue
            keys, enter = part[:-1], part[-1:]
            if keys:
                self._send(keys, channel, writer)
            self._settle(channel, writer, user_out)
            verdict = self.gate.judge_enter(enter)
            if verdict is None:
                self._send(enter, channel, writer)
                continue
            rule, line = verdict
            writer.record(encode_denied(Denied(time.time(), line, rule.name)))
            self._send(CLEAR_LINE, channel, writer)
            self._settle(channel, writer, user_out)
            write_all(user_out, f"\r\ncommand refused by rule {rule.name}\r\n".encode())
            self._send(b"\r", channel, writer)  # an empty line: the next prompt

    def _send(self, keys: bytes, channel: Any, writer: ChunkWriter) -> None:
        writer.chunk(Direction.INPUT, keys)  # recorded before it is sent
        channel.sendall(keys)
        self.gate.sent(keys)
        self.sent_at = time.monotonic()

    def _settle(self, channel: Any, writer: ChunkWriter, user_out: int) -> None:
        """Relay the echo of what was just sent, so the screen shows the line.

        Only keys sent within SETTLE_MAX_S can still be echoing; otherwise
        what has come is taken without waiting.
        """
        deadline = self.sent_at + SETTLE_MAX_S
        while True:
            wait = SETTLE_S if time.monotonic() < deadline else 0.0
            readable, _, _ = select.select([channel], [], [], wait)
            if not readable:
                return
            data = channel.recv(READ_BYTES)
            if not data:
                return  # closed: the relay's loop sees it next
            writer.chunk(Direction.OUTPUT, data)
            write_all(user_out, data)
            self.gate.shown(data)
