"""Timed terminal events to the lines the remote shell and its programs accepted.

The command is read off an emulated screen, not assembled from keystrokes:
what the line editor shows when the user presses Enter is what the shell
runs, whatever editing, completion or history recall produced it, and what a
no-echo prompt hides (a password) is never on the screen.

How a line is known to be accepted, decided line by line (a session may
change shells at any point and back: `dash`, `zsh`, `ssh` to an old host,
`exit`):

1. Marker lines. bash >= 5.1 (any readline >= 8.1 program), zsh and fish
   switch bracketed paste on when they start reading a line and off when
   they are done: `ESC[?2004h` before (bash, fish) or after (zsh) the prompt,
   and on Enter a line feed next to `ESC[?2004l`: before it for bash
   (`\\r\\n ESC[?2004l`) and fish (colours between), after it for zsh
   (`ESC[?2004l \\r\\r\\n`). Ctrl-C and Ctrl-D switch it off too.
2. Other lines (dash, busybox sh, bash --noediting or with bracketed paste
   off, programs reading the terminal): a line feed on the line that the
   user's first key was typed on, or that ends with the keys typed.

Either way a line counts only when an Enter key read from the person
accepted it, and a line typed with plain keys only if it reads as those
keys (parsers/keys.py): text a command prints to look like a prompt and a
command is never a command. Who read the line (the shell, or the program it
runs) is parsers/programs.py's call; a line typed unseen at a shell prompt
(`stty -echo`) is hidden input, counted, never stored.

The prompt is cut off where the cursor was when the first key of the line was
read; if the line was redrawn elsewhere since (a completion listing), by the
prompt's text.

Output while no line is being edited (the commands' own output) is not
emulated, only scanned for the alternate-screen and bracketed-paste markers,
and the last few KiB are kept to draw the next prompt: a megabyte of output
does not cost the emulator a megabyte of emulation. Output that is emulated
goes through parsers/control_strings.py first: no OSC or DCS string of a
command's output can keep the emulator from reading what follows.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pyte

from parsers.control_strings import StringFilter
from parsers.events import (
    FOREGROUND_CHARS,
    Checkpoint,
    Chunk,
    CommandLine,
    Direction,
    Event,
    LineKind,
    MarkerKind,
    Resize,
)
from parsers.history_expansion import expansion_prefix, plausible_expansion
from parsers.keys import KeyLine, KeyLog, Unparsed
from parsers.programs import Reader, looks_like_shell_prompt, reader_of
from parsers.screen import LineScreen

DEFAULT_ROWS = 24
DEFAULT_COLS = 80
TAIL_BYTES = 8192  # command output kept to redraw the next prompt from
FALLBACK_EMULATION_BYTES = 64 << 10  # see _segment
EARLY_KEYS_BYTES = 4096
MIN_SIZE, MAX_SIZE = 2, 2000  # a TIOCGWINSZ outside this is not believed
MAX_SHELL_PROMPTS = 8
MAX_PROMPT_CHARS = 256

# DEC private modes: ESC [ ? Pm h (set) / l (reset).
_PRIVATE_MODE_RE = re.compile(rb"\x1b\[\?([0-9;]{1,32})([hl])")
_PARTIAL_ESC_RE = re.compile(rb"\x1b(?:\[(?:\?[0-9;]{0,32})?)?\Z")
_ESCAPES_RE = re.compile(
    r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|.)"
)
# zsh: ESC[?2004l then the line feed, with carriage returns and colours between
# (in the same write, or the next: zsh writes them apart).
_LF_AFTER_RE = re.compile(rb"(?:\r|\x1b\[[0-9;]*m)*\n")
_NOTHING_YET_RE = re.compile(rb"(?:\r|\x1b\[[0-9;]*m)*\Z")
BRACKETED_PASTE = 2004
ALT_SCREENS = frozenset({47, 1047, 1049})
CANCEL_KEY = b"\x03"  # Ctrl-C: the kernel flushes what was typed ahead


class CommandBuilder:
    """Feeds a session's events through a terminal emulator, yields lines."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        rows, cols = DEFAULT_ROWS, DEFAULT_COLS
        foreground = None
        prompts: tuple[str, ...] = ()
        self.readline = False  # the last shell line came with the markers
        self.prompt = ""  # the last prompt text learned
        self.line_prompt = ""  # the prompt of the line being typed, if any
        self.skip_until: tuple[int, int] | None = None
        pending = 0
        if checkpoint is not None:
            rows, cols = checkpoint.rows, checkpoint.cols
            self.readline = checkpoint.readline
            self.prompt = checkpoint.prompt
            pending = checkpoint.pending_enters
            self.skip_until = (checkpoint.offset, checkpoint.skip)
            foreground = checkpoint.foreground
            prompts = tuple(checkpoint.shell_prompts)
        self.keys = KeyLog(pending)
        self.screen = LineScreen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.strings = StringFilter()
        self.marker_line = False  # a line editor is reading a line with markers
        self.alt = False  # a full-screen program owns the terminal
        self.skipping = True  # between lines: output is scanned, not emulated
        self.tail = bytearray()  # last output seen while skipping
        self.carry = b""  # an escape sequence cut by the end of a chunk
        self.emulated = 0  # fallback: output emulated since the last key
        self.early = bytearray()  # keys read before any output (late attach)
        self.output_seen = False  # the remote side has printed something
        self.origin: tuple[int, int] | None = None  # cursor at first key
        self.line_start: tuple[int, int] | None = None  # cursor at ESC[?2004h
        self.rprompt: tuple[int, int, str] | None = None  # right prompt: row, col
        self.ended = False
        # Who reads the next line: the last command run, the shell's prompts.
        self.foreground: str | None = foreground
        self.shell_prompts = prompts
        # A line with `!!` waits for the expansion bash prints before running it.
        self.expanding: tuple[CommandLine, bytearray] | None = None
        # zsh's ESC[?2004l came at the end of a write: its line feed is next.
        self.deferred: tuple[str, Reader] | None = None

    @property
    def unparsed(self) -> Unparsed:
        """Keys typed that became no command, input or secret, so far."""
        return self.keys.unparsed

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
        if event.kind in (MarkerKind.ATTACH, MarkerKind.DETACH):
            self.lose_track()
        elif event.kind == MarkerKind.END and not self.ended:
            return self.finish()
        return []

    def finish(self) -> list[CommandLine]:
        """The session is over: a line waiting for its expansion is released."""
        lines: list[CommandLine] = []
        self._expanded(lines, final=True)
        self.keys.give_up()
        self.ended = True
        return lines

    def checkpoint(self, offset: int, skip: int) -> Checkpoint:
        return Checkpoint(
            offset=offset,
            skip=skip,
            rows=self.screen.lines,
            cols=self.screen.columns,
            readline=self.readline,
            prompt=self.prompt,
            pending_enters=len(self.keys.pending),
            foreground=(self.foreground or "")[:FOREGROUND_CHARS] or None,
            shell_prompts=self.shell_prompts,
        )

    # -- input -----------------------------------------------------------

    def _input(self, chunk: Chunk) -> None:
        data = chunk.data
        cancel = data.rfind(CANCEL_KEY)
        if cancel >= 0:
            self.keys.cancel()
            self.origin = None
            data = data[cancel + 1 :]
            if not data:
                return
        before = len(self.keys.pending)
        self.keys.add(data, chunk.time, self.alt, bracketed=self.marker_line)
        if not self.output_seen:
            # Keys before the remote side printed anything (typed at login, or
            # the tracer attached mid-session): no prompt is on the screen to
            # learn from; their echo is matched against them instead.
            self.early += data
            del self.early[:-EARLY_KEYS_BYTES]
            if self.skipping:
                self._resume_emulation()
            return
        if self.marker_line:
            if not self.skipping and self.origin is None:
                self._learn_prompt()
            return
        if self.alt:
            return  # keys for vim, less, top
        self.emulated = 0
        if self.skipping:
            self._resume_emulation()
        if self.origin is None and before == 0:
            self._learn_prompt()

    def _learn_prompt(self) -> None:
        """The text left of the cursor when the first key is read is the prompt."""
        row, col = self.screen.cursor_position_abs()
        self.origin = (row, col)
        rows = self.screen.logical_rows(row)
        cells: list[str] = []
        for abs_row in rows:
            row_cells = self.screen.row_cells(abs_row)
            if abs_row == row:
                cells.extend(row_cells[:col])
                after = "".join(row_cells[col:])
                right = after.strip()
                # zsh's RPROMPT, fish's right prompt: text right of the cursor
                # before anything was typed; not part of the command.
                self.rprompt = (
                    (row, col + after.index(right[0]), right) if right else None
                )
                break
            cells.extend(row_cells)
        start = 0
        if self.line_start is not None and self.line_start[0] in rows:
            start = (self.line_start[0] - rows[0]) * self.screen.columns
            start = min(start + self.line_start[1], len(cells))
        typed, rest = self._early_typed()
        if typed and not self.marker_line:
            # Keys read before any output (the tracer attached after the
            # prompt was drawn) are echoed on this line: the command starts
            # with them, the prompt is what precedes them.
            cut = _suffix_start(cells, typed, start)
            if cut is not None:
                self.origin = (
                    rows[0] + cut // self.screen.columns,
                    cut % self.screen.columns,
                )
                cells = cells[:cut]
                self.early = bytearray(rest)
        prompt = "".join(cells[start:])
        self.line_prompt = prompt
        if prompt.strip():
            self.prompt = prompt

    def _early_typed(self) -> tuple[str, bytes]:
        """The first line of keys read before any output, and the rest."""
        if not self.early:
            return "", b""
        first, _, rest = bytes(self.early).replace(b"\r", b"\n").partition(b"\n")
        text = first.decode("utf-8", "replace")
        return (text.strip() if text.isprintable() else ""), rest

    # -- output ----------------------------------------------------------

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
        if self.deferred is not None:
            pos = self._deferred_line_feed(data, chunk, base, lines)
        for m in _PRIVATE_MODE_RE.finditer(data, pos):
            self._segment(data[pos : m.start()], chunk, pos - base, lines)
            pos = m.start()
            self._private_mode(data, m, chunk, base, lines)
            pos = m.end()
        self._segment(data[pos:], chunk, pos - base, lines)
        if self.keys.pending and not (self.marker_line or self.skipping or self.alt):
            self._prompt_again(chunk, lines)
        return lines

    def _deferred_line_feed(
        self, data: bytes, chunk: Chunk, base: int, lines: list[CommandLine]
    ) -> int:
        """The write after zsh's ESC[?2004l: its line feed accepts the line."""
        assert self.deferred is not None
        text, reader = self.deferred
        after = _LF_AFTER_RE.match(data)
        if after is None:
            if _NOTHING_YET_RE.match(data):
                return len(data)  # still nothing drawn: wait on
            self.deferred = None
            return 0
        self.deferred = None
        if self.keys.take(text) is not None:
            resume = self.checkpoint(chunk.offset, max(0, after.end() - base))
            self._accept(
                text, self.line_prompt, reader, chunk.time, resume, lines, True
            )
        self._segment(data[: after.end()], chunk, -base, lines)
        return after.end()

    def _prompt_again(self, chunk: Chunk, lines: list[CommandLine]) -> None:
        """The shell's prompt is drawn again with lines still unseen: no echo.

        A shell without a line editor (dash) under `stty -echo` runs what is
        typed without showing it: no line feed ends it on the screen, the
        next prompt just follows. Those lines are hidden input.
        """
        if self.readline or not self.shell_prompts:
            return
        row, col = self.screen.cursor_position_abs()
        rows = self.screen.logical_rows(row)
        before = self._cells_before((row, col), rows[0])
        after = "".join(self.screen.row_cells(row)[col:]).strip()
        prompt = next((p for p in self.shell_prompts if before.endswith(p)), None)
        if prompt is None or after:
            return
        resume = self.checkpoint(chunk.offset, len(chunk.data))
        while (line := self.keys.spend_oldest()) is not None:
            if line.printable:
                self._unseen(line, prompt, chunk.time, resume, lines)
        self.origin = None

    def _emulate(self, data: bytes) -> None:
        self.stream.feed(self.strings.feed(data))

    def _segment(
        self, data: bytes, chunk: Chunk, start: int, lines: list[CommandLine]
    ) -> None:
        """Output between two private-mode markers."""
        if not data:
            return
        if self.expanding is not None:
            self.expanding[1].extend(data[:TAIL_BYTES])
            self._expanded(lines, final=False)
        if self.skipping:
            self.tail += data
            if len(self.tail) > TAIL_BYTES:
                del self.tail[: len(self.tail) - TAIL_BYTES]
            return
        if not self.marker_line:
            # Without the markers, a key pressed while a command pours out
            # output would have us emulate all of it: past this much output
            # since the last key, it is output, not a line being typed.
            self.emulated += len(data)
            if self.emulated > FALLBACK_EMULATION_BYTES:
                self._start_skipping()
                self._segment(data, chunk, start, lines)
                return
        if self.marker_line or not self.keys.pending:
            self._emulate(data)
            return
        # No markers, Enters pending: look at every line feed.
        pos = 0
        while pos < len(data):
            lf = data.find(b"\n", pos)
            if lf < 0:
                self._emulate(data[pos:])
                return
            self._emulate(data[pos:lf])
            if not self.alt:
                self._line_feed(chunk, max(0, start + lf + 1), lines)
            self._emulate(b"\n")
            pos = lf + 1
            if self.expanding is not None and pos < len(data):
                self._start_skipping()
                self._segment(data[pos:], chunk, start + pos, lines)
                return
        if not self.keys.pending:
            self._start_skipping()

    def _line_feed(self, chunk: Chunk, skip: int, lines: list[CommandLine]) -> None:
        """A line feed while no marker line is read: is it a line's Enter?"""
        time = chunk.time
        row = self.screen.absolute_row()
        found = self._fallback_line(row)
        if found is None:
            return
        text, prompt, at_origin = found
        if not text:
            oldest = self.keys.oldest()
            if not at_origin or oldest is None:
                return
            if oldest.printable and not prompt.strip():
                return  # an empty line of output, not the keys' echo
            self.keys.spend_oldest()
            self.origin = None
            if oldest.printable:
                resume = self.checkpoint(chunk.offset, skip)
                self._unseen(oldest, prompt, time, resume, lines)
            return
        reader = self._reader(prompt, markers=False)
        if reader is Reader.UNKNOWN:
            return  # its shell will draw it again when it reads it
        if self.keys.take(text) is None:
            return  # not what was typed: output
        self.origin = None
        resume = self.checkpoint(chunk.offset, skip)
        self._accept(text, prompt, reader, time, resume, lines, markers=False)

    def _unseen(
        self,
        keys: KeyLine,
        prompt: str,
        time: float,
        resume: Checkpoint,
        lines: list[CommandLine],
    ) -> None:
        """Keys typed and Enter, nothing echoed: a secret, or hidden shell input."""
        reader = self._reader(prompt, markers=False)
        if reader is Reader.PROGRAM or not looks_like_shell_prompt(prompt):
            return  # a password prompt: never stored
        lines.append(
            CommandLine(
                time,
                "",
                prompt,
                resume,
                kind=LineKind.HIDDEN_INPUT,
                keys=keys.printable,
            )
        )

    def _fallback_line(self, abs_row: int) -> tuple[str, str, bool] | None:
        """The line a line feed ends: (text, prompt, began at the first key)."""
        screen = self.screen
        rows = screen.logical_rows(abs_row)
        bottom = rows[-1]
        if self.origin is not None and self.origin[0] in rows:
            text = self._text(self.origin, bottom)
            return text, self._cells_before(self.origin, rows[0]), True
        whole = screen.text_from((rows[0], 0), bottom).rstrip()
        for typed in self.keys.typed_texts():
            if whole.endswith(typed):
                # Typed ahead: echoed where the output stood (the kernel), or
                # after the prompt once the shell read it.
                return typed, whole[: -len(typed)], False
        start = self._line_start(bottom)
        if start is not None and self.prompt:
            return self._text(start, bottom), self.prompt, False
        return None

    def _cells_before(self, position: tuple[int, int], first: int) -> str:
        row, col = position
        cells: list[str] = []
        for abs_row in range(first, row + 1):
            row_cells = self.screen.row_cells(abs_row)
            cells.extend(row_cells[:col] if abs_row == row else row_cells)
        return "".join(cells)

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
                if not self.marker_line:
                    self._start_skipping()
            else:
                self.keys.leave_full_screen()
        if BRACKETED_PASTE in modes:
            if is_set:
                self._expanded(lines, final=True)
                if self.skipping:
                    self._resume_emulation()
                self.marker_line = True
                self.keys.line_editor_started()
                self.screen.soft_wraps = True
                self.line_start = self.screen.cursor_position_abs()
                self.origin = None
                self.rprompt = None
                self.line_prompt = ""
            elif self.marker_line or (
                self.early and self.screen.last_linefeed_row is not None
            ):
                # The second case: the tracer came after the prompt was drawn
                # (late attach), and the keys were read before any output; a
                # line feed then ESC[?2004l still says readline accepted them.
                self._marker_end(data, m, chunk, base, lines)
                return
        if not self.skipping:
            self._emulate(data[m.start() : m.end()])
        self.strings.reset()

    def _marker_end(
        self,
        data: bytes,
        m: re.Match[bytes],
        chunk: Chunk,
        base: int,
        lines: list[CommandLine],
    ) -> None:
        """ESC[?2004l: an accepted line when a line feed is next to it."""
        self.marker_line = False
        self.screen.soft_wraps = False
        row = self.screen.last_linefeed_row
        skip = m.end() - base
        deferred = False
        if row is None:
            after = _LF_AFTER_RE.match(data, m.end())
            if after is not None:  # zsh: the line feed follows
                row = self.screen.absolute_row()
                skip = after.end() - base
            elif _NOTHING_YET_RE.match(data, m.end()):
                row = self.screen.absolute_row()
                deferred = True
        if row is not None:
            text = self._accepted_text(row)
            if text is not None:
                reader = self._reader(self.line_prompt, markers=True)
                if deferred:
                    if reader is not Reader.UNKNOWN:
                        self.deferred = (text, reader)
                elif reader is not Reader.UNKNOWN and self.keys.take(text) is not None:
                    resume = self.checkpoint(chunk.offset, max(0, skip))
                    self._accept(
                        text, self.prompt, reader, chunk.time, resume, lines, True
                    )
        self.early.clear()
        self._start_skipping()
        self.strings.reset()

    def _reader(self, prompt: str, markers: bool) -> Reader:
        return reader_of(
            prompt, markers, self.foreground, self.shell_prompts, self.readline
        )

    def _accept(
        self,
        text: str,
        prompt: str,
        reader: Reader,
        time: float,
        resume: Checkpoint,
        lines: list[CommandLine],
        markers: bool,
    ) -> None:
        if reader is Reader.PROGRAM:
            if text:
                lines.append(
                    CommandLine(
                        time,
                        text,
                        prompt,
                        resume,
                        kind=LineKind.INPUT,
                        program=self.foreground,
                    )
                )
            return
        self.readline = markers
        if prompt.strip() and prompt not in self.shell_prompts:
            prompt = prompt[-MAX_PROMPT_CHARS:]
            self.shell_prompts = (*self.shell_prompts, prompt)[-MAX_SHELL_PROMPTS:]
        if not text:
            return
        self.foreground = text
        line = CommandLine(time, text, prompt, resume)
        if expansion_prefix(text) is not None:
            self.expanding = (line, bytearray())
        else:
            lines.append(line)

    def _expanded(self, lines: list[CommandLine], final: bool) -> None:
        """Release a line waiting for its history expansion, once bash printed it."""
        if self.expanding is None:
            return
        line, printed = self.expanding
        first, newline, _ = bytes(printed).lstrip(b"\r\n").partition(b"\n")
        if not newline and not final and len(printed) < TAIL_BYTES:
            return
        self.expanding = None
        text = _ESCAPES_RE.sub("", first.decode("utf-8", "replace")).replace("\r", "")
        text = text.rstrip()
        if newline and plausible_expansion(line.text, text):
            # bash ran the expansion; what was typed is kept beside it.
            line = replace(line, text=text, typed=line.text)
            self.foreground = text
        lines.append(line)

    def _accepted_text(self, abs_row: int) -> str | None:
        """The command on the line ending at `abs_row`, without its prompt."""
        screen = self.screen
        bottom = screen.logical_rows(abs_row)[-1]
        start = self._line_start(bottom)
        if start is not None:
            return self._text(start, bottom)
        rows = screen.logical_rows(abs_row)
        whole = screen.text_from((rows[0], 0), bottom).rstrip() if rows else ""
        typed, rest = self._early_typed()
        if typed and whole.endswith(typed):
            # Keys typed before the prompt was drawn (at login, or while the
            # last command ran) are echoed verbatim after it: what precedes
            # them is the prompt.
            self.early = bytearray(rest)
            if whole[: -len(typed)].strip():
                self.prompt = whole[: -len(typed)]
            return typed
        return whole or None

    def _text(self, start: tuple[int, int], bottom: int) -> str:
        """Screen text from `start` to the end of `bottom`, right prompt cut."""
        blank = None
        if self.rprompt is not None:
            row, col, right = self.rprompt
            cells = self.screen.row_cells(row)
            if start[0] <= row <= bottom and "".join(cells[col:]).strip() == right:
                blank = (row, col)  # still there, untouched: not typed
        return self.screen.text_from(start, bottom, blank).rstrip()

    def _line_start(self, bottom: int) -> tuple[int, int] | None:
        """Where the line being accepted begins, after its prompt.

        Walks up from the last row: a pasted newline puts a line's text on
        several rows, and a completion listing makes readline redraw the
        prompt below where the first key was read.
        """
        screen = self.screen
        top = screen.top_row
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
        self.screen.keep_scrolled = False
        self.screen.forget_scrolled()

    def _resume_emulation(self) -> None:
        """Redraw the last partial row of the skipped output on a clean screen."""
        self.skipping = False
        self.screen.reset()
        self.screen.keep_scrolled = True
        self.strings.reset()
        self.line_start = None
        tail = bytes(self.tail)
        self.tail.clear()
        last_lf = tail.rfind(b"\n")
        self._emulate(tail[last_lf + 1 :])

    def lose_track(self) -> None:
        """Bytes may be missing from here on (a tracer detached, a log changed).

        The prompt of the line being typed may have been drawn while nobody
        watched, so the markers cannot be waited for: fall back on Enter keys
        until the shell shows the next marker.
        """
        self.marker_line = False
        self.screen.soft_wraps = False
        self.keys.give_up()
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
