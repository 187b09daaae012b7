"""A pyte screen that remembers which rows wrapped into the next one.

A command line longer than the terminal spans several rows, and a terminal
does not send a newline where it wraps, so joining rows back into one line
needs to know which rows the cursor left by auto-wrap. pyte does not record
that; this subclass does, and numbers rows absolutely (the row index plus the
lines scrolled off the top so far), so that a position taken before the
screen scrolled can still be found after.

While a line is being typed (`keep_scrolled`), rows that scroll off the top
are kept, up to MAX_KEPT_CELLS, so that a command taller than the terminal is
read whole (issue 15: a 20 KB paste lost its first rows, and with them an
`rm -rf /x; #` in front of the padding). Characters that take no cell and
combine with nothing (U+200B, U+2060, U+FEFF, U+202E, C1 controls) are kept
in the cell before them: pyte stopped drawing the rest of the text at them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

import pyte
from pyte import modes as mo
from wcwidth import wcwidth

MAX_KEPT_CELLS = 4 << 20  # rows scrolled off while a line is typed, in cells
MAX_SHARED_CHARS = 4096  # cells kept to be shared (attributes x character)


class LineScreen(pyte.Screen):
    """pyte.Screen plus auto-wrap and scroll bookkeeping."""

    def __init__(self, columns: int, lines: int) -> None:
        self.scrolled = 0  # lines scrolled off the top since the last reset
        self.wrapped: set[int] = set()  # absolute rows that wrapped into the next
        self.linefeeds = 0  # explicit line feeds seen (not auto-wraps)
        self.last_linefeed_row: int | None = None  # absolute row an LF left
        # readline redraws a line that fills a row exactly with a CR LF after
        # the last column instead of relying on auto-wrap; while it edits, such
        # a row continues on the next one all the same.
        self.soft_wraps = False
        self._full_row: int | None = None  # row left by CR from the last column
        self.keep_scrolled = False
        self.kept: dict[int, list[str]] = {}  # absolute row -> its cells
        # (attrs, char) -> its cell, shared: kept through resets (one a
        # command), or every command would build its cells anew.
        self._shared: dict[tuple[Any, str], Any] = {}
        super().__init__(columns, lines)

    # -- positions -------------------------------------------------------

    def absolute_row(self, y: int | None = None) -> int:
        return (self.cursor.y if y is None else y) + self.scrolled

    def cursor_position_abs(self) -> tuple[int, int]:
        return self.absolute_row(), min(self.cursor.x, self.columns)

    @property
    def top_row(self) -> int:
        """The oldest absolute row still readable."""
        return next(iter(self.kept)) if self.kept else self.scrolled

    def logical_rows(self, abs_row: int) -> list[int]:
        """The absolute rows of the wrapped line that contains `abs_row`."""
        first = abs_row
        top = self.top_row
        while first - 1 in self.wrapped and first - 1 >= top:
            first -= 1
        last = abs_row
        while last in self.wrapped and last + 1 < self.scrolled + self.lines:
            last += 1
        return list(range(first, last + 1))

    def row_cells(self, abs_row: int) -> list[str]:
        """Cell contents of one row; a wide character's second cell is ''."""
        y = abs_row - self.scrolled
        if y < 0:
            return self.kept.get(abs_row, [])
        if y >= self.lines:
            return []
        return self._cells(y)

    def _cells(self, y: int) -> list[str]:
        # Only the cells drawn are stored (pyte makes a blank one for each
        # other cell read): a row of output costs what it holds.
        cells = [" "] * self.columns
        for x, char in self.buffer[y].items():
            if x < self.columns:
                cells[x] = char.data
        return cells

    def prefix_cells(self, abs_row: int, prefix: str) -> int | None:
        """Cells the row's text takes to spell `prefix`, if it starts with it."""
        if not prefix:
            return None
        y = abs_row - self.scrolled
        cells: Iterator[str]
        if 0 <= y < self.lines:
            line = self.buffer[y]
            cells = (line[x].data for x in range(self.columns))
        else:
            cells = iter(self.row_cells(abs_row))
        text = ""
        for n, cell in enumerate(cells, start=1):
            text += cell
            if len(text) >= len(prefix):
                return n if text.startswith(prefix) else None
        return None

    def text_from(
        self,
        start: tuple[int, int],
        last_row: int,
        blank: tuple[int, int] | None = None,
    ) -> str:
        """Text from `start` (row, col) to the end of `last_row`.

        Rows that auto-wrapped join with nothing between them; rows that a
        newline ended (readline shows a pasted newline so) join with "\n".
        `blank` (row, col): that row is read only up to col (a right prompt).
        """
        row, col = start
        parts: list[str] = []
        for abs_row in range(row, last_row + 1):
            cells = self.row_cells(abs_row)
            if blank is not None and abs_row == blank[0]:
                cells = cells[: blank[1]]
            text = "".join(cells[col:] if abs_row == row else cells)
            if abs_row in self.wrapped and abs_row < last_row:
                parts.append(text)
            else:
                parts.append(text.rstrip() + ("\n" if abs_row < last_row else ""))
        return "".join(parts)

    # -- pyte hooks ------------------------------------------------------

    def forget_scrolled(self) -> None:
        self.kept = {}
        for row in [r for r in self.wrapped if r < self.scrolled - 1]:
            self.wrapped.discard(row)

    def reset(self) -> None:
        super().reset()
        self.scrolled = 0
        self.kept = {}
        self.wrapped = set()
        self.last_linefeed_row = None
        self._full_row = None

    def draw(self, data: str) -> None:
        if data.isascii():
            self._draw(data)
            return
        start = 0
        for index, char in enumerate(data):
            if wcwidth(char) > 0 or unicodedata.combining(char):
                continue
            self._draw(data[start:index])
            self._attach(char)
            start = index + 1
        self._draw(data[start:])

    def _attach(self, char: str) -> None:
        """Keep a character that takes no cell with the one before it."""
        x = min(self.cursor.x, self.columns) - 1
        if x < 0:
            return  # nothing before it on the row: it shows nowhere
        line = self.buffer[self.cursor.y]
        line[x] = line[x]._replace(data=line[x].data + char)

    def _draw(self, data: str) -> None:
        # Split the run where it reaches the right margin, so each auto-wrap
        # passes through here and is recorded, and the rest through pyte.
        while data:
            if self.cursor.x >= self.columns:
                if mo.DECAWM not in self.mode:
                    super().draw(data)
                    break
                self.wrapped.add(self.absolute_row())
                self.carriage_return()
                super().linefeed()
            room = self.columns - self.cursor.x
            if data.isascii():
                take = min(room, len(data))
            else:
                take, used = 0, 0
                for char in data:
                    width = max(wcwidth(char), 0)
                    if used + width > room:
                        break
                    used += width
                    take += 1
                if take == 0:
                    # A wide character that does not fit in the last column
                    # wraps whole, as xterm does (pyte would split it).
                    self.cursor.x = self.columns
                    continue
            self._put(data[:take])
            data = data[take:]
        self.last_linefeed_row = None
        self._full_row = None

    def _put(self, data: str) -> None:
        """pyte's draw of a run that fits on the cursor's row.

        pyte builds every cell with `attrs._replace(data=char)`, a new
        namedtuple per character, and asks wcwidth for each: half the time
        of the terminal emulation for typed lines (bench.ingest_cost
        --profile). A cell is immutable, so for printable ASCII (one column
        each, pyte's own outcome) one Char serves every cell of that
        character in those attributes. Insert mode and anything else: pyte.
        """
        text = data.translate(self.g1_charset if self.charset else self.g0_charset)
        if mo.IRM in self.mode or not (text.isascii() and text.isprintable()):
            super().draw(data)
            return
        x, attrs, shared = self.cursor.x, self.cursor.attrs, self._shared
        if len(shared) > MAX_SHARED_CHARS:
            shared.clear()  # bounded: hostile output can name many colours
        line = self.buffer[self.cursor.y]
        for char in text:
            cell = shared.get((attrs, char))
            if cell is None:
                cell = shared[attrs, char] = attrs._replace(data=char)
            line[x] = cell
            x += 1
        self.cursor.x = min(x, self.columns)
        self.dirty.add(self.cursor.y)

    def carriage_return(self) -> None:
        if self.cursor.x >= self.columns:
            self._full_row = self.absolute_row()
        super().carriage_return()

    def linefeed(self) -> None:
        row = self.absolute_row()
        if self.soft_wraps and (self.cursor.x >= self.columns or self._full_row == row):
            self.wrapped.add(row)
        self._full_row = None
        self.last_linefeed_row = row
        self.linefeeds += 1
        super().linefeed()

    def index(self) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0:
            if self.keep_scrolled:
                self._keep(self.scrolled)
            else:
                self.wrapped.discard(self.scrolled - 1)  # gone off the top
            self.scrolled += 1
        super().index()

    def _keep(self, abs_row: int) -> None:
        self.kept[abs_row] = self._cells(0)
        while len(self.kept) * self.columns > MAX_KEPT_CELLS:
            oldest = next(iter(self.kept))  # rows are kept in order
            del self.kept[oldest]
            self.wrapped.discard(oldest)

    def reverse_index(self) -> None:
        top, _ = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == top == 0:
            self.scrolled -= 1
        super().reverse_index()

    def cursor_back(self, count: int | None = None) -> None:
        # After a character lands in the last column the cursor waits there
        # for the wrap; pyte parks it one column further, so a backspace
        # would land one column too far right.
        if self.cursor.x >= self.columns:
            self.cursor.x = self.columns - 1
        super().cursor_back(count)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        if how in (0, 2) and self.cursor.x < self.columns:
            self.wrapped.discard(self.absolute_row())
        super().erase_in_line(how, private)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if how == 0:
            rows = range(self.cursor.y, self.lines)
        elif how == 1:
            rows = range(0, self.cursor.y)
        else:
            rows = range(self.lines)
        for y in rows:
            self.wrapped.discard(self.absolute_row(y))
        super().erase_in_display(how, *args, **kwargs)

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        # pyte does not reflow; rows cut or padded no longer join reliably.
        if (lines or self.lines, columns or self.columns) != (self.lines, self.columns):
            self.wrapped.clear()
        super().resize(lines, columns)
