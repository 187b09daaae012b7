"""Where a line ends when no line editor frames it with readline's markers.

dash, busybox sh, bash --noediting or with bracketed paste off, programs
reading the terminal: the line ends at the line feed that echoes its Enter,
on the row its first key was typed on, or on a row that ends with the keys
typed (typed ahead: the kernel echoed them where the output stood). In a tmux
or screen pane narrower than the terminal there is no line feed: the cursor
moves on to the pane's next row. Under `stty -echo` nothing shows at all: the
shell's prompt just comes back, and the lines typed are hidden input.
"""

from __future__ import annotations

from collections.abc import Callable

from parsers.accepted import AcceptedLines
from parsers.events import Checkpoint, Chunk, CommandLine
from parsers.keys import KeyLog
from parsers.programs import Reader
from parsers.screen import LineScreen
from parsers.screen_lines import LineFinder

PANE_BORDERS = "│|┃║"  # what tmux and screen draw between panes side by side


class FallbackEnds:
    """Line ends without markers, for one session's builder."""

    def __init__(
        self,
        screen: LineScreen,
        lines: LineFinder,
        keys: KeyLog,
        sink: AcceptedLines,
        checkpoint: Callable[[int, int], Checkpoint],
    ) -> None:
        self.screen = screen
        self.lines = lines
        self.keys = keys
        self.sink = sink
        self.checkpoint = checkpoint

    def line_feed(self, chunk: Chunk, skip: int, lines: list[CommandLine]) -> None:
        """A line feed while no marker line is read: is it a line's Enter?"""
        time = chunk.time
        row = self.screen.absolute_row()
        found = self.lines.fallback_line(
            row, self.keys.typed_texts(), self.keys.longest(), self.keys.edited()
        )
        if found is None:
            return
        text, prompt, at_origin = found
        if not text:
            oldest = self.keys.oldest()
            if not at_origin or oldest is None:
                return
            if oldest.visible and not prompt.strip():
                return  # an empty line of output, not the keys' echo
            self.keys.spend_oldest()
            self.lines.origin = None
            if oldest.visible:
                resume = self.checkpoint(chunk.offset, skip)
                self.sink.unseen(oldest, prompt, time, resume, lines)
            return
        reader = self.sink.reader(prompt, markers=False)
        if reader is Reader.UNKNOWN:
            return  # its shell will draw it again when it reads it
        typed = self.keys.take(text)
        if typed is None:
            return  # not what was typed: output
        text = typed.typed_line(text)
        self.lines.origin = None
        resume = self.checkpoint(chunk.offset, skip)
        self.sink.accept(text, prompt, reader, time, resume, lines, markers=False)

    def moved_on(self, chunk: Chunk, lines: list[CommandLine]) -> None:
        """In a tmux or screen pane a line ends with the cursor moved, no line feed.

        A pane narrower than the terminal cannot take a line feed as it is:
        the multiplexer moves the cursor to the pane's next row itself. The
        typed line is what stands from the first key to the pane's border.
        """
        origin = self.lines.origin
        if origin is None:
            return
        rows = self.screen.logical_rows(origin[0])
        if self.screen.cursor_position_abs()[0] in rows:
            return
        text = self.lines.text(origin, rows[-1])
        for typed in self.keys.typed_texts():
            rest = text[len(typed) :].lstrip()
            if text.startswith(typed) and (not rest or rest[0] in PANE_BORDERS):
                if self.keys.take(typed) is not None:
                    prompt = self.lines.cells_before(origin, rows[0])
                    resume = self.checkpoint(chunk.offset, len(chunk.data))
                    self.lines.origin = None
                    reader = self.sink.reader(prompt, markers=False)
                    self.sink.accept(
                        typed, prompt, reader, chunk.time, resume, lines, False
                    )
                return

    def prompt_again(self, chunk: Chunk, lines: list[CommandLine]) -> None:
        """The shell's prompt is drawn again with lines still unseen: no echo.

        A shell without a line editor (dash) under `stty -echo` runs what is
        typed without showing it: no line feed ends it on the screen, the
        next prompt just follows. Those lines are hidden input.
        """
        if self.sink.readline or not self.sink.shell_prompts:
            return
        row, col = self.screen.cursor_position_abs()
        rows = self.screen.logical_rows(row)
        before = self.lines.cells_before((row, col), rows[0])
        after = "".join(self.screen.row_cells(row)[col:]).strip()
        prompt = next((p for p in self.sink.shell_prompts if before.endswith(p)), None)
        if prompt is None or after:
            return
        origin = self.lines.origin
        if origin is not None and origin != (row, col):
            # Typed where the first key was read ("Password: " of `read -s`,
            # which prints no newline): that prompt says what the keys were.
            prompt = self.lines.cells_before(
                origin, self.screen.logical_rows(origin[0])[0]
            )
        resume = self.checkpoint(chunk.offset, len(chunk.data))
        while (line := self.keys.spend_oldest()) is not None:
            if line.visible:
                self.sink.unseen(line, prompt, chunk.time, resume, lines)
        self.lines.origin = None
