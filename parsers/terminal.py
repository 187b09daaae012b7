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

from parsers.accepted import AcceptedLines
from parsers.control_strings import StringFilter
from parsers.events import (
    FOREGROUND_CHARS,
    Checkpoint,
    Chunk,
    CommandLine,
    Direction,
    Event,
    Marker,
    MarkerKind,
    Resize,
)
from parsers.fallback import FallbackEnds
from parsers.keys import KeyLog, Unparsed
from parsers.programs import Reader, is_multiplexer
from parsers.screen import LineScreen
from parsers.screen_lines import LineFinder
from parsers.terminal_stream import TerminalStream

DEFAULT_ROWS = 24
DEFAULT_COLS = 80
TAIL_BYTES = 8192  # command output kept to redraw the next prompt from
FALLBACK_EMULATION_BYTES = 64 << 10  # see _segment
EARLY_KEYS_BYTES = 4096
MIN_SIZE, MAX_SIZE = 2, 2000  # a TIOCGWINSZ outside this is not believed

# DEC private modes: ESC [ ? Pm h (set) / l (reset).
_PRIVATE_MODE_RE = re.compile(rb"\x1b\[\?([0-9;]{1,32})([hl])")
_PARTIAL_ESC_RE = re.compile(rb"\x1b(?:\[(?:\?[0-9;]{0,32})?)?\Z")
# zsh: ESC[?2004l then the line feed, with carriage returns and colours between
# (in the same write, or the next: zsh writes them apart).
_LF_AFTER_RE = re.compile(rb"(?:\r|\x1b\[[0-9;]*m)*\n")
_NOTHING_YET_RE = re.compile(rb"(?:\r|\x1b\[[0-9;]*m)*\Z")
BRACKETED_PASTE = 2004
ALT_SCREENS = frozenset({47, 1047, 1049})
CANCEL_KEY = b"\x03"  # Ctrl-C: the kernel flushes what was typed ahead
MULTIPLEXER_PREFIXES = (b"\x02", b"\x01")  # tmux's C-b, screen's C-a
EDIT_AND_EXECUTE = b"\x18\x05"  # Ctrl-X Ctrl-E


class CommandBuilder:
    """Feeds a session's events through a terminal emulator, yields lines."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        rows, cols = DEFAULT_ROWS, DEFAULT_COLS
        foreground = None
        prompt = ""
        prompts: tuple[str, ...] = ()
        readline = False
        self.skip_until: tuple[int, int] | None = None
        pending = 0
        if checkpoint is not None:
            rows, cols = checkpoint.rows, checkpoint.cols
            readline = checkpoint.readline
            prompt = checkpoint.prompt
            pending = checkpoint.pending_enters
            self.skip_until = (checkpoint.offset, checkpoint.skip)
            foreground = checkpoint.foreground
            prompts = tuple(checkpoint.shell_prompts)
        self.keys = KeyLog(pending)
        self.screen = LineScreen(cols, rows)
        self.stream = TerminalStream(self.screen)
        self.lines = LineFinder(self.screen, prompt)
        self.strings = StringFilter()
        self.marker_line = False  # a line editor is reading a line with markers
        self.alt = False  # a full-screen program owns the terminal
        # tmux or screen owns the alternate screen: its panes are shells.
        self.multiplexer = False
        self.skipping = True  # between lines: output is scanned, not emulated
        self.tail = bytearray()  # last output seen while skipping
        self.carry = b""  # an escape sequence cut by the end of a chunk
        self.emulated = 0  # fallback: output emulated since the last key
        self.output_seen = False  # the remote side has printed something
        self.ended = False
        # Who reads the next line: the last command run, the shell's prompts.
        self.sink = AcceptedLines(foreground, prompts, readline)
        self.fallback = FallbackEnds(
            self.screen, self.lines, self.keys, self.sink, self.checkpoint
        )
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
        if not isinstance(event, Marker):
            return []  # a transfer: nothing the terminal showed
        if event.kind in (MarkerKind.ATTACH, MarkerKind.DETACH):
            self.lose_track()
        elif event.kind == MarkerKind.END and not self.ended:
            return self.finish()
        return []

    def finish(self) -> list[CommandLine]:
        """The session is over: a line waiting for its expansion is released."""
        lines: list[CommandLine] = []
        self.sink.expanded(lines, final=True)
        self.keys.give_up()
        self.ended = True
        return lines

    def checkpoint(self, offset: int, skip: int) -> Checkpoint:
        return Checkpoint(
            offset=offset,
            skip=skip,
            rows=self.screen.lines,
            cols=self.screen.columns,
            readline=self.sink.readline,
            prompt=self.lines.prompt,
            pending_enters=len(self.keys.pending),
            foreground=(self.sink.foreground or "")[:FOREGROUND_CHARS] or None,
            shell_prompts=self.sink.shell_prompts,
        )

    # -- input -----------------------------------------------------------

    def _input(self, chunk: Chunk) -> None:
        data = chunk.data
        cancel = data.rfind(CANCEL_KEY)
        if cancel >= 0:
            self.keys.cancel()
            self.sink.cancelled = True
            self.lines.origin = None
            data = data[cancel + 1 :]
            if not data:
                return
        before = len(self.keys.pending)
        edit = self.marker_line and EDIT_AND_EXECUTE in data
        if edit:
            # readline's edit-and-execute-command accepts the line as Enter
            # does (bash keeps it in its history), hands it to $EDITOR, then
            # runs, and prints, what the editor leaves.
            data = data.replace(EDIT_AND_EXECUTE, b"\r")
        self.keys.add(data, chunk.time, self.alt)
        if edit:
            self.sink.edit_started(self.checkpoint(chunk.offset, len(chunk.data)))
        if not self.output_seen:
            # Keys before the remote side printed anything (typed at login, or
            # the tracer attached mid-session): no prompt is on the screen to
            # learn from; their echo is matched against them instead.
            self.lines.early += data
            del self.lines.early[:-EARLY_KEYS_BYTES]
            if self.skipping:
                self._resume_emulation()
            return
        if self.marker_line:
            if not self.skipping and self.lines.origin is None:
                self.lines.learn_prompt(self.marker_line)
            return
        if self.alt:
            return  # keys for vim, less, top
        self.emulated = 0
        if self.skipping:
            self._resume_emulation()
        if self.multiplexer and data[:1] in MULTIPLEXER_PREFIXES:
            # C-b (tmux) or C-a (screen) and a command key: a pane or window
            # changes, the line begins where the next key is typed.
            self.lines.origin = None
        elif self.lines.origin is None and before == 0:
            self.lines.learn_prompt(self.marker_line)

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
            if self.multiplexer:
                self.fallback.moved_on(chunk, lines)
            self.fallback.prompt_again(chunk, lines)
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
        typed = self.keys.take(text)
        if typed is not None:
            resume = self.checkpoint(chunk.offset, max(0, after.end() - base))
            self.sink.accept(
                typed.typed_line(text),
                self.lines.line_prompt,
                reader,
                chunk.time,
                resume,
                lines,
                True,
            )
        self._segment(data[: after.end()], chunk, -base, lines)
        return after.end()

    def _emulate(self, data: bytes) -> None:
        self.stream.feed(self.strings.feed(data))

    def _segment(
        self, data: bytes, chunk: Chunk, start: int, lines: list[CommandLine]
    ) -> None:
        """Output between two private-mode markers."""
        if not data:
            return
        if self.sink.expanding is not None or self.sink.edited is not None:
            self.sink.output(data, chunk.time, lines, self.alt)
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
                self.fallback.line_feed(chunk, max(0, start + lf + 1), lines)
            self._emulate(b"\n")
            pos = lf + 1
            if self.sink.expanding is not None and pos < len(data):
                self._start_skipping()
                self._segment(data[pos:], chunk, start + pos, lines)
                return
        if not self.keys.pending:
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
            if is_set and is_multiplexer(self.sink.foreground or ""):
                # tmux or screen: every pane's lines are the session's; the
                # programs in them go full screen inside it, never out here.
                self.multiplexer = True
                self.marker_line = False
            elif self.multiplexer and not is_set:
                self.multiplexer = False  # detached, or it exited
            else:
                self.alt = is_set
                if is_set and not self.marker_line:
                    self._start_skipping()
                elif not is_set:
                    resume = self.checkpoint(chunk.offset, max(0, m.end() - base))
                    for escape in self.keys.leave_full_screen():
                        self.sink.accept(
                            escape, "", Reader.PROGRAM, chunk.time, resume, lines, False
                        )
        if BRACKETED_PASTE in modes and not self.multiplexer:
            # Inside tmux or screen the markers are the multiplexer's, for its
            # active pane, switched when it pleases: lines end as the panes
            # show them (line feeds, or the cursor moved on).
            if is_set and not self.alt:
                self.sink.expanded(lines, final=True)
                self.sink.edit_done(chunk.time, lines, final=True)
            if is_set:
                if self.skipping:
                    self._resume_emulation()
                self.marker_line = True
                self.keys.line_editor_started()
                self.screen.soft_wraps = True
                self.lines.new_line()
            elif self.marker_line or (
                self.lines.early and self.screen.last_linefeed_row is not None
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
            text = self.lines.accepted_text(row, self.keys.typed_texts())
            if text is not None:
                reader = self.sink.reader(self.lines.line_prompt, markers=True)
                if deferred:
                    if reader is not Reader.UNKNOWN:
                        self.deferred = (text, reader)
                elif reader is not Reader.UNKNOWN:
                    self._marker_accept(text, reader, chunk, skip, lines)
        self.lines.early.clear()
        self._start_skipping()
        self.strings.reset()

    def _marker_accept(
        self,
        text: str,
        reader: Reader,
        chunk: Chunk,
        skip: int,
        lines: list[CommandLine],
    ) -> None:
        typed = self.keys.take(text)
        if typed is not None:
            resume = self.checkpoint(chunk.offset, max(0, skip))
            text = typed.typed_line(text)
            prompt = self.lines.prompt
            self.sink.accept(text, prompt, reader, chunk.time, resume, lines, True)

    # -- modes -----------------------------------------------------------

    def _start_skipping(self) -> None:
        self.skipping = True
        self.tail.clear()
        self.lines.origin = None
        self.screen.keep_scrolled = False
        self.screen.forget_scrolled()

    def _resume_emulation(self) -> None:
        """Redraw the last partial row of the skipped output on a clean screen."""
        self.skipping = False
        self.screen.reset()
        self.screen.keep_scrolled = True
        self.strings.reset()
        self.lines.line_start = None
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
        # Keys read before the next output are a late attach's: their echo
        # is matched against them, as at login (the prompt was drawn unseen).
        self.output_seen = False
        self.lines.early.clear()
        self._start_skipping()
