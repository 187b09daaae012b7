"""Timed terminal events to the command lines the remote shell accepted.

The command is read off an emulated screen, not assembled from keystrokes:
what readline shows on the line when the user presses Enter is what bash
runs, whatever editing, completion or history recall produced it, and what a
no-echo prompt hides (a password) is never on the screen.

How a line is known to be accepted, in order of trust:

1. Readline (bash >= 5.1, any GNU readline >= 8.1 program) switches bracketed
   paste on when it starts reading a line and off when it is done:
   `ESC[?2004h` before the prompt, and on Enter `\\r\\n ESC[?2004l`. A line
   feed followed by `ESC[?2004l` with nothing drawn in between is an accepted
   line; Ctrl-C and Ctrl-D switch it off too, but without that line feed.
   Input read while readline is not reading (type-ahead, a program reading
   the terminal in cooked mode, a password) is never a command line.
2. A shell that never sends those markers (dash, busybox sh, bash with
   bracketed paste off) falls back on Enter keys: a line feed while the user
   has pressed Enter more often than lines were accepted, on a line that
   starts with the prompt seen when the user began typing.

The prompt is cut off where the cursor was when the first key of the line was
read; if readline has redrawn the line elsewhere since (a completion listing),
by the prompt's text.

Output while no line is being edited (the commands' own output) is not
emulated, only scanned for the alternate-screen and readline markers, and the
last few KiB are kept to draw the next prompt: a megabyte of output does not
cost the emulator a megabyte of emulation.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pyte

from parsers.events import (
    Checkpoint,
    Chunk,
    CommandLine,
    Direction,
    Event,
    Marker,
    MarkerKind,
    Resize,
)
from parsers.history_expansion import expansion_prefix, plausible_expansion
from parsers.screen import LineScreen

DEFAULT_ROWS = 24
DEFAULT_COLS = 80
TAIL_BYTES = 8192  # command output kept to redraw the next prompt from
MAX_LINE_ROWS = 200  # how far up a command line may begin
FALLBACK_EMULATION_BYTES = 64 << 10  # see _segment
TYPEAHEAD_BYTES = 4096
MIN_SIZE, MAX_SIZE = 2, 2000  # a TIOCGWINSZ outside this is not believed

# DEC private modes: ESC [ ? Pm h (set) / l (reset).
_PRIVATE_MODE_RE = re.compile(rb"\x1b\[\?([0-9;]{1,32})([hl])")
_PARTIAL_ESC_RE = re.compile(rb"\x1b(?:\[(?:\?[0-9;]{0,32})?)?\Z")
_ESCAPES_RE = re.compile(
    r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|.)"
)
BRACKETED_PASTE = 2004
ALT_SCREENS = frozenset({47, 1047, 1049})
ENTER_KEYS = b"\r\n"
CANCEL_KEYS = b"\x03"  # Ctrl-C: the kernel flushes what was typed ahead


class CommandBuilder:
    """Feeds a session's events through a terminal emulator, yields lines."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        rows, cols = DEFAULT_ROWS, DEFAULT_COLS
        self.readline = False  # the shell has shown the readline markers
        self.prompt = ""  # the last prompt text learned
        self.pending_enters = 0  # fallback mode: Enters not yet matched
        self.skip_until: tuple[int, int] | None = None
        if checkpoint is not None:
            rows, cols = checkpoint.rows, checkpoint.cols
            self.readline = checkpoint.readline
            self.prompt = checkpoint.prompt
            self.pending_enters = checkpoint.pending_enters
            self.skip_until = (checkpoint.offset, checkpoint.skip)
        self.screen = LineScreen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.editing = False  # readline is reading a line now
        self.alt = False  # a full-screen program owns the terminal
        self.skipping = True  # between lines: output is scanned, not emulated
        self.tail = bytearray()  # last output seen while skipping
        self.carry = b""  # an escape sequence cut by the end of a chunk
        self.emulated = 0  # fallback mode: output emulated since the last key
        self.typeahead = bytearray()  # keys read while no line was edited
        self.output_seen = False  # the remote side has printed something
        self.origin: tuple[int, int] | None = None  # cursor at first key
        self.line_start: tuple[int, int] | None = None  # cursor at ESC[?2004h
        self.ended: Marker | None = None
        # A line with `!!` waits for the expansion bash prints before running it.
        self.expanding: tuple[CommandLine, bytearray] | None = None

    # -- public ----------------------------------------------------------

    def feed(self, event: Event) -> list[CommandLine]:
        if self.skip_until is not None:
            offset, skip = self.skip_until
            if event.offset < offset:
                return []
            self.skip_until = None
            if event.offset == offset and isinstance(event, Chunk):
                event = replace(event, data=event.data[skip:])
        if isinstance(event, Chunk):
            if event.direction is Direction.INPUT:
                self._input(event)
                return []
            return self._output(event)
        if isinstance(event, Resize):
            if (
                MIN_SIZE <= event.rows <= MAX_SIZE
                and MIN_SIZE <= event.cols <= MAX_SIZE
            ):
                self.screen.resize(event.rows, event.cols)
            return []
        if not isinstance(event, Marker):
            return []  # a transfer: nothing the terminal showed
        if event.kind in (MarkerKind.ATTACH, MarkerKind.DETACH):
            self.lose_track()
        elif event.kind == MarkerKind.END and self.ended is None:
            self.ended = event
        return []

    def checkpoint(self, offset: int, skip: int) -> Checkpoint:
        return Checkpoint(
            offset=offset,
            skip=skip,
            rows=self.screen.lines,
            cols=self.screen.columns,
            readline=self.readline,
            prompt=self.prompt,
            pending_enters=self.pending_enters,
        )

    # -- input -----------------------------------------------------------

    def _input(self, chunk: Chunk) -> None:
        if self.alt:
            return  # keys for vim, less, top: never command lines
        if any(key in chunk.data for key in CANCEL_KEYS):
            self.origin = None
            self.pending_enters = 0
            return
        if self.readline:
            if self.editing and not self.skipping:
                if self.origin is None:
                    self._learn_prompt()
                self.typeahead.clear()
            else:
                self._type_ahead(chunk.data)
            return
        if not self.output_seen:
            # Keys before the remote side printed anything (typed at login, or
            # the tracer attached mid-session): no prompt is on the screen to
            # learn from; their echo is matched against them instead.
            self._type_ahead(chunk.data)
            self.pending_enters += sum(chunk.data.count(key) for key in (b"\r", b"\n"))
            if self.skipping:
                self._resume_emulation()
            return
        self.emulated = 0
        if self.skipping:
            self._resume_emulation()
        if self.origin is None and self.pending_enters == 0:
            self._learn_prompt()
        self.pending_enters += sum(chunk.data.count(key) for key in (b"\r", b"\n"))

    def _learn_prompt(self) -> None:
        """The text left of the cursor when the first key is read is the prompt."""
        row, col = self.screen.cursor_position_abs()
        self.origin = (row, col)
        cells: list[str] = []
        for abs_row in self.screen.logical_rows(row):
            row_cells = self.screen.row_cells(abs_row)
            if abs_row == row:
                cells.extend(row_cells[:col])
                break
            cells.extend(row_cells)
        start = 0
        if self.line_start is not None and self.line_start[
            0
        ] in self.screen.logical_rows(row):
            first = self.screen.logical_rows(row)[0]
            start = (
                self.line_start[0] - first
            ) * self.screen.columns + self.line_start[1]
            start = min(start, len(cells))
        typed, rest = self._typed_ahead()
        if typed and not self.readline:
            # Keys read before any output (the tracer attached after the
            # prompt was drawn) are echoed on this line: the command starts
            # with them, the prompt is what precedes them.
            cut = _suffix_start(cells, typed, start)
            if cut is not None:
                first = self.screen.logical_rows(row)[0]
                self.origin = (
                    first + cut // self.screen.columns,
                    cut % self.screen.columns,
                )
                cells = cells[:cut]
                self.typeahead = bytearray(rest)
        prompt = "".join(cells[start:])
        if prompt.strip():
            self.prompt = prompt

    # -- output ----------------------------------------------------------

    def _type_ahead(self, data: bytes) -> None:
        self.typeahead += data
        if len(self.typeahead) > TYPEAHEAD_BYTES:
            del self.typeahead[: len(self.typeahead) - TYPEAHEAD_BYTES]

    def _output(self, chunk: Chunk) -> list[CommandLine]:
        self.output_seen = True
        data = self.carry + chunk.data
        base = len(self.carry)  # bytes of `data` that came with an earlier chunk
        self.carry = b""
        partial = _PARTIAL_ESC_RE.search(data, max(0, len(data) - 40))
        if partial is not None:
            self.carry = data[partial.start() :]
            data = data[: partial.start()]
        lines: list[CommandLine] = []
        pos = 0
        for m in _PRIVATE_MODE_RE.finditer(data):
            self._segment(data[pos : m.start()], chunk, pos - base, lines)
            pos = m.start()
            self._private_mode(data, m, chunk, base, lines)
            pos = m.end()
        self._segment(data[pos:], chunk, pos - base, lines)
        return lines

    def _segment(
        self, data: bytes, chunk: Chunk, start: int, lines: list[CommandLine]
    ) -> None:
        """Output between two private-mode markers."""
        if not data:
            return
        if self.skipping:
            if self.expanding is not None:
                self.expanding[1].extend(data)
                self._expanded(lines, final=False)
            self.tail += data
            if len(self.tail) > TAIL_BYTES:
                del self.tail[: len(self.tail) - TAIL_BYTES]
            return
        if not self.readline:
            # Without readline's markers, a key pressed while a command pours
            # out output would have us emulate all of it: past this much output
            # since the last key, it is output, not a line being typed.
            self.emulated += len(data)
            if self.emulated > FALLBACK_EMULATION_BYTES:
                self.pending_enters = 0
                self._start_skipping()
                self._segment(data, chunk, start, lines)
                return
        if self.readline or self.pending_enters == 0:
            self.stream.feed(data)
            return
        # Fallback mode with Enters pending: look at every line feed.
        pos = 0
        while pos < len(data):
            lf = data.find(b"\n", pos)
            if lf < 0:
                self.stream.feed(data[pos:])
                return
            self.stream.feed(data[pos:lf])
            if self.pending_enters and not self.alt:
                line = self._accepted_text(
                    self.screen.absolute_row(), require_prompt=True
                )
                if line is not None:
                    self.pending_enters -= 1
                    self.origin = None
                    # Keys typed ahead up to this Enter are spent: ESC[?2004l
                    # right after must not accept them a second time.
                    self.typeahead = bytearray(self._typed_ahead()[1])
                    resume = self.checkpoint(chunk.offset, max(0, start + lf + 1))
                    if line:
                        lines.append(CommandLine(chunk.time, line, self.prompt, resume))
            self.stream.feed(b"\n")
            pos = lf + 1
        if self.pending_enters == 0:
            self._start_skipping()

    def _private_mode(
        self,
        data: bytes,
        m: re.Match[bytes],
        chunk: Chunk,
        base: int,
        lines: list[CommandLine],
    ) -> None:
        is_set = m.group(2) == b"h"
        modes = {int(p) for p in m.group(1).split(b";") if p}
        if modes & ALT_SCREENS:
            self.alt = is_set
            if is_set:
                self._start_skipping()
        if BRACKETED_PASTE in modes and not self.alt:
            if is_set:
                self.readline = True
                self._expanded(lines, final=True)
                if self.skipping:
                    self._resume_emulation()
                self.editing = True
                self.screen.soft_wraps = True
                self.line_start = self.screen.cursor_position_abs()
                self.origin = None
            elif self.editing or (
                not self.readline
                and self.typeahead
                and self.screen.last_linefeed_row is not None
            ):
                # The second case: the tracer came after the prompt was drawn
                # (late attach), and the keys were read before any output; a
                # line feed then ESC[?2004l still says readline accepted them.
                self.readline = True
                self.pending_enters = 0
                self.editing = False
                self.screen.soft_wraps = False
                row = self.screen.last_linefeed_row
                if row is not None:
                    text = self._accepted_text(row, require_prompt=False)
                    resume = self.checkpoint(chunk.offset, max(0, m.end() - base))
                    if text:
                        line = CommandLine(chunk.time, text, self.prompt, resume)
                        if expansion_prefix(text) is not None:
                            self.expanding = (line, bytearray())
                        else:
                            lines.append(line)
                self._start_skipping()
                return
        if not self.skipping:
            self.stream.feed(data[m.start() : m.end()])

    def _expanded(self, lines: list[CommandLine], final: bool) -> None:
        """Release a line waiting for its history expansion, once bash printed it."""
        if self.expanding is None:
            return
        line, printed = self.expanding
        first, newline, _ = bytes(printed).partition(b"\n")
        if not newline and not final:
            return
        self.expanding = None
        text = _ESCAPES_RE.sub("", first.decode("utf-8", "replace")).replace("\r", "")
        if newline and plausible_expansion(line.text, text):
            line = replace(line, text=text.rstrip())
        lines.append(line)

    def _accepted_text(self, abs_row: int, require_prompt: bool) -> str | None:
        """The command on the line ending at `abs_row`, without its prompt."""
        screen = self.screen
        bottom = screen.logical_rows(abs_row)[-1]
        start = self._line_start(bottom)
        if start is not None:
            return screen.text_from(start, bottom).rstrip()
        rows = screen.logical_rows(abs_row)
        whole = screen.text_from((rows[0], 0), bottom).rstrip() if rows else ""
        typed, rest = self._typed_ahead()
        if typed and whole.endswith(typed) and not require_prompt:
            # Only once readline's ESC[?2004l confirmed the line: a terminal in
            # cooked mode (a shell still logging in) echoes type-ahead too.
            # Keys typed before the prompt was drawn (at login, or while the
            # last command ran) are echoed verbatim after it: what precedes
            # them is the prompt.
            self.typeahead = bytearray(rest)
            if whole[: -len(typed)].strip():
                self.prompt = whole[: -len(typed)]
            return typed
        if require_prompt:
            return None  # not the shell's line: output, program input
        return whole or None

    def _typed_ahead(self) -> tuple[str, bytes]:
        """The first line of keys read while no line was edited, and the rest."""
        if not self.typeahead:
            return "", b""
        first, _, rest = bytes(self.typeahead).replace(b"\r", b"\n").partition(b"\n")
        text = first.decode("utf-8", "replace")
        return (text.strip() if text.isprintable() else ""), rest

    def _line_start(self, bottom: int) -> tuple[int, int] | None:
        """Where the line being accepted begins, after its prompt.

        Walks up from the last row: a pasted newline puts a line's text on
        several rows, and a completion listing makes readline redraw the
        prompt below where the first key was read.
        """
        screen = self.screen
        top = max(screen.scrolled, bottom - MAX_LINE_ROWS)
        row = bottom
        while row >= top:
            group = screen.logical_rows(row)
            if self.origin is not None and self.origin[0] in group:
                return self.origin
            first = group[0]
            cells = screen.prefix_cells(first, self.prompt)
            if cells is not None:
                return first + cells // screen.columns, cells % screen.columns
            row = first - 1
        return None

    # -- modes -----------------------------------------------------------

    def _start_skipping(self) -> None:
        self.skipping = True
        self.tail.clear()
        self.origin = None

    def _resume_emulation(self) -> None:
        """Redraw the last partial row of the skipped output on a clean screen."""
        self.skipping = False
        self.screen.reset()
        self.line_start = None
        tail = bytes(self.tail)
        self.tail.clear()
        last_lf = tail.rfind(b"\n")
        self.stream.feed(tail[last_lf + 1 :])

    def lose_track(self) -> None:
        """Bytes may be missing from here on (a tracer detached, a log changed).

        The prompt of the line being typed may have been drawn while nobody
        watched, so readline's markers cannot be waited for: fall back on Enter
        keys until the shell shows the next marker.
        """
        self.readline = False
        self.editing = False
        self.screen.soft_wraps = False
        self.pending_enters = 0
        self.carry = b""
        self._start_skipping()


def _suffix_start(cells: list[str], text: str, lowest: int) -> int | None:
    """The cell index from which `cells` read `text` to the end, if they do."""
    joined = ""
    for index in range(len(cells) - 1, lowest - 1, -1):
        joined = cells[index] + joined
        if len(joined) >= len(text):
            return index if joined == text else None
    return None
