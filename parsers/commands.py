"""Accepted lines to commands: the lines bash read as one command, joined.

bash asks for more (PS2) when a line leaves a quote, a here-document or a
compound command open, or ends in a backslash or a pipe; it runs and records
the whole as one command, lines joined by newlines, except that a backslash
at the end of a line joins it to the next with nothing (bash drops both).
A command still open when the next line is read at the primary prompt again
was given up (Ctrl-C): bash ran nothing, but its history keeps what was
entered, and so do we, marked cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from parsers.events import Checkpoint, CommandLine
from parsers.shell_syntax import needs_more


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """One command as the shell ran it; several lines are joined by newlines."""

    time: float  # when its first line was accepted
    text: str
    lines: int
    checkpoint: Checkpoint  # taken after its last line
    cancelled: bool = False  # entered, then abandoned before it could run


class CommandAssembler:
    """Joins continuation lines and splits pasted ones; one per session, in order.

    A command is released only with the checkpoint of the line that
    completed it, and lines are released together, so resuming a log from a
    released checkpoint never starts in the middle of an unreleased command.
    """

    def __init__(self) -> None:
        self.lines: list[CommandLine] = []  # accepted, not yet released
        self.abandoned = 0

    def feed(self, line: CommandLine) -> list[ShellCommand]:
        released: list[ShellCommand] = []
        if self.lines and line.prompt.strip() and line.prompt == self.lines[0].prompt:
            # Read at the primary prompt again: whatever is still open was
            # given up (Ctrl-C); bash ran only the complete part.
            checkpoint = self.lines[-1].checkpoint
            released, rest = self._split(checkpoint)
            if rest:
                self.abandoned += 1
                released.append(
                    ShellCommand(
                        rest[0], _join(rest[1]), len(rest[1]), checkpoint, True
                    )
                )
            self.lines = []
        self.lines.append(line)
        commands, rest = self._split(line.checkpoint)
        if not rest:
            self.lines = []
            released += commands
        return released

    def _split(
        self, checkpoint: Checkpoint
    ) -> tuple[list[ShellCommand], tuple[float, list[str]] | None]:
        """Complete commands in the held lines, and the open remainder."""
        commands: list[ShellCommand] = []
        pending: list[str] = []
        started = 0.0
        for line in self.lines:
            for part in line.text.split("\n"):
                if not pending:
                    started = line.time
                pending.append(part)
                if not needs_more("\n".join(pending)):
                    text = _join(pending)
                    if text.strip():
                        commands.append(
                            ShellCommand(started, text, len(pending), checkpoint)
                        )
                    pending = []
        return commands, (started, pending) if pending else None


def _join(parts: list[str]) -> str:
    """Lines of one command as bash keeps them: a trailing backslash joins."""
    text = parts[0]
    for part in parts[1:]:
        text = text[:-1] + part if _continues(text) else text + "\n" + part
    return text


def _continues(text: str) -> bool:
    """Whether the text ends in a backslash that escapes the newline."""
    stripped = text.rstrip("\\")
    return (len(text) - len(stripped)) % 2 == 1 and needs_more(text)
