"""Events to commands: the one composition the daemon and the tests both run.

A session's events go through the terminal emulator (parsers/terminal.py),
which yields the lines the shell accepted, then through the assembler
(parsers/commands.py), which joins continuation lines into the commands the
shell ran. The agent's ingest feeds a live log through a `CommandPipeline`
event by event; the corpus tests, the accuracy and throughput benchmarks feed
whole captured logs through `commands_from_log`, so what is measured is what
runs in production.
"""

from __future__ import annotations

from collections.abc import Iterable

from parsers.commands import CommandAssembler, ShellCommand
from parsers.events import Checkpoint, Denied, Event, Transfer
from parsers.keys import Unparsed
from parsers.strace_lines import StraceDecoder
from parsers.terminal import CommandBuilder


class CommandPipeline:
    """One session's events in, the commands its shell ran out, in order.

    Resumed from a stored checkpoint, it emits nothing that was released
    before that checkpoint was taken (README: the store).
    """

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        self.builder = CommandBuilder(checkpoint)
        self.assembler = CommandAssembler()

    def feed(self, event: Event) -> list[ShellCommand]:
        if isinstance(event, (Transfer, Denied)):
            return []  # a record of its own, never terminal text
        return [
            command
            for line in self.builder.feed(event)
            for command in self.assembler.feed(line)
        ]

    @property
    def unparsed(self) -> Unparsed:
        """Keys typed that became no command, input or secret (parsers/keys.py)."""
        return self.builder.unparsed

    def lose_track(self) -> None:
        """Bytes may be missing from here on (the log changed under the reader)."""
        self.builder.lose_track()


def commands_from_events(events: Iterable[Event]) -> list[ShellCommand]:
    pipeline = CommandPipeline()
    return [command for event in events for command in pipeline.feed(event)]


def commands_from_log(log: bytes, tty: str | None = None) -> list[ShellCommand]:
    """A whole session log at once (benchmarks, the corpus, tests)."""
    decoder = StraceDecoder(tty=tty)
    return commands_from_events(decoder.feed(log) + decoder.finish())
