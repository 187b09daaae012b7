"""Accepted lines to commands: the lines bash read as one command, joined.

bash asks for more (PS2) when a line leaves a quote, a here-document or a
compound command open, or ends in a backslash or a pipe; it runs and records
the whole as one command, lines joined by newlines, except that a backslash
at the end of a line joins it to the next with nothing (bash drops both).
A command still open when the next line is read at the primary prompt again
was given up (Ctrl-C): bash ran nothing, but its history keeps what was
entered, and so do we, marked cancelled.

Each line is lexed once, with the state the previous one left
(parsers/shell_syntax.Lexer), and a command held open for more lines is
capped: past MAX_HELD_LINES lines or MAX_HELD_CHARS characters it is released
as it stands, marked unterminated, so one user's `echo "` followed by
endless lines costs linear time and bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from parsers.events import Checkpoint, CommandLine, LineKind
from parsers.shell_syntax import Lexer

MAX_HELD_LINES = 2000
MAX_HELD_CHARS = 1 << 20


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """One command as the shell ran it; several lines are joined by newlines."""

    time: float  # when its first line was accepted
    text: str
    lines: int
    checkpoint: Checkpoint  # taken after its last line
    cancelled: bool = False  # entered, then abandoned before it could run
    kind: LineKind = LineKind.COMMAND
    program: str | None = None  # for an input: the command line that started it
    typed: str | None = None  # what was typed, when the shell ran an expansion
    keys: int = 0  # for hidden input: the number of keys typed unseen
    unterminated: bool = False  # still open when the cap released it


@dataclass(slots=True)
class _Open:
    """A command being read: its lines so far and the lexer's state after them."""

    time: float
    parts: list[str]
    lexer: Lexer
    typed: str | None = None
    chars: int = 0
    lines: int = 0
    fragment: bool = False  # the rest of a command the cap released in part


class CommandAssembler:
    """Joins continuation lines and splits pasted ones; one per session, in order.

    A command is released only with the checkpoint of the line that
    completed it, and lines are released together, so resuming a log from a
    released checkpoint never starts in the middle of an unreleased command.
    """

    def __init__(self) -> None:
        self.held = 0  # accepted lines not yet released
        self.first_prompt = ""  # the prompt of the first held line
        self.last: Checkpoint | None = None  # checkpoint of the last held line
        self.ready: list[tuple[float, str, int, str | None]] = []  # complete
        self.fragments: list[tuple[float, str, int]] = []  # ends of capped ones
        self.open: _Open | None = None
        self.abandoned = 0
        self.capped = 0

    def feed(self, line: CommandLine) -> list[ShellCommand]:
        if line.kind is LineKind.INPUT and self.open is not None:
            # The shell is reading the rest of an open command (`cat <<EOF`
            # looks like it starts a program reading lines): a continuation.
            line = replace(line, kind=LineKind.COMMAND, program=None)
        if line.kind is not LineKind.COMMAND:
            return [
                ShellCommand(
                    line.time,
                    line.text,
                    1,
                    line.checkpoint,
                    kind=line.kind,
                    program=line.program,
                    keys=line.keys,
                )
            ]
        released: list[ShellCommand] = []
        if self.held and (
            line.after_cancel
            or (line.prompt.strip() and line.prompt == self.first_prompt)
        ):
            # Read at the primary prompt again, or after Ctrl-C: whatever is
            # still open was given up; bash ran only the complete part.
            released = self._release(cancelled=True)
        if not self.held:
            self.first_prompt = line.prompt
        self.held += 1
        self.last = line.checkpoint
        for part in line.text.split("\n"):
            self._part(line, part)
        if self.open is None:
            released += self._release()
        elif self.held > MAX_HELD_LINES or self.open.chars > MAX_HELD_CHARS:
            # Released as it stands; bash is still reading it, so the lexer
            # reads on and what follows is released the same way.
            self.capped += 1
            rest = self.open
            released += self._release(unterminated=True)
            self.open = _Open(rest.time, [], rest.lexer, fragment=True)
            self.held = 1
        return released

    def _part(self, line: CommandLine, part: str) -> None:
        current = self.open
        if current is None:
            current = self.open = _Open(line.time, [], Lexer(), line.typed)
            more = current.lexer.feed(part, first=True)
        else:
            if current.lexer.continued:
                # A trailing backslash joins the lines with nothing between.
                current.parts[-1] = current.parts[-1][:-1] + part
                current.chars += len(part)
                current.lines += 1
                more = current.lexer.feed(part)
                self._close(current, more)
                return
            more = current.lexer.feed(part)
        current.parts.append(part)
        current.chars += len(part) + 1
        current.lines += 1
        self._close(current, more)

    def _close(self, current: _Open, more: bool) -> None:
        if more:
            return
        text = "\n".join(current.parts)
        if current.fragment:
            self.fragments.append((current.time, text, current.lines))
        elif text.strip():
            typed = current.typed if len(current.parts) == 1 else None
            self.ready.append((current.time, text, current.lines, typed))
        self.open = None

    def _release(
        self, cancelled: bool = False, unterminated: bool = False
    ) -> list[ShellCommand]:
        checkpoint = self.last
        released: list[ShellCommand] = []
        if checkpoint is not None:
            for time, text, lines in self.fragments:
                released.append(
                    ShellCommand(time, text, lines, checkpoint, unterminated=True)
                )
            for time, text, lines, typed in self.ready:
                released.append(
                    ShellCommand(time, text, lines, checkpoint, typed=typed)
                )
            rest = self.open
            if rest is not None:
                if cancelled:
                    self.abandoned += 1
                released.append(
                    ShellCommand(
                        rest.time,
                        "\n".join(rest.parts),
                        rest.lines,
                        checkpoint,
                        cancelled=cancelled,
                        unterminated=unterminated,
                    )
                )
        self.ready = []
        self.fragments = []
        self.open = None
        self.held = 0
        return released
