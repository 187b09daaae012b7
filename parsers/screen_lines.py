"""Where the line being typed stands on the emulated screen, and its prompt.

The cursor when the first key of a line is read marks where the typed text
begins; what is left of it is the prompt, what stands right of it then is a
right prompt (zsh's RPROMPT, fish's), never typed. If the line editor redrew
the line elsewhere since (a completion listing), the prompt's text finds it.
Keys read before any output (the tracer attached after the prompt was
drawn) are found by their echo instead.
"""

from __future__ import annotations

from parsers.screen import LineScreen

PROMPT_SEARCH_ROWS = 200  # how far up a line's prompt is looked for by its text
COMPLETION_SLACK_CELLS = 256  # what Tab may add to a line beyond its keys


class LineFinder:
    """One session's screen, read for the line being typed."""

    def __init__(self, screen: LineScreen, prompt: str = "") -> None:
        self.screen = screen
        self.prompt = prompt  # the last prompt text learned
        self.line_prompt = ""  # the prompt of the line being typed, if any
        self.origin: tuple[int, int] | None = None  # cursor at first key
        self.line_start: tuple[int, int] | None = None  # cursor at ESC[?2004h
        self.rprompt: tuple[int, int, str] | None = None  # right prompt: row, col
        self.early = bytearray()  # keys read before any output (late attach)

    def new_line(self) -> None:
        """A line editor starts reading a line (ESC[?2004h) where the cursor is."""
        self.line_start = self.screen.cursor_position_abs()
        self.origin = None
        self.rprompt = None
        self.line_prompt = ""

    def learn_prompt(self, marker_line: bool) -> None:
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
        typed, rest = self.early_typed()
        if typed and not marker_line:
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

    def early_typed(self) -> tuple[str, bytes]:
        """The first line of keys read before any output, and the rest."""
        if not self.early:
            return "", b""
        first, _, rest = bytes(self.early).replace(b"\r", b"\n").partition(b"\n")
        text = first.decode("utf-8", "replace")
        return (text.strip() if text.isprintable() else ""), rest

    def fallback_line(
        self, abs_row: int, typed: list[str], longest: int, edited: bool
    ) -> tuple[str, str, bool] | None:
        """The line a line feed ends: (text, prompt, began at the first key).

        `longest`: the most keys a pending line holds; a line found by its
        prompt's text spans no more rows than those keys and the prompt can
        fill (with room for what completion adds), so each line feed of a
        flood of output looks at a few rows, not at the screen.
        """
        screen = self.screen
        rows = screen.logical_rows(abs_row)
        bottom = rows[-1]
        if self.origin is not None and self.origin[0] in rows:
            text = self.text(self.origin, bottom)
            return text, self.cells_before(self.origin, rows[0]), True
        last = "".join(screen.row_cells(bottom)).rstrip()
        if not edited and not any(
            last.endswith(text[-len(last) :]) for text in typed if last
        ):
            # Lines of plain keys end as their keys do: unless this row ends
            # like one of them, no line ends here (output pouring out).
            return None
        whole = screen.text_from((rows[0], 0), bottom).rstrip()
        for text in typed:
            if whole.endswith(text):
                # Typed ahead: echoed where the output stood (the kernel), or
                # after the prompt once the shell read it.
                return text, whole[: -len(text)], False
        cells = longest + len(self.prompt) + COMPLETION_SLACK_CELLS
        start = self.start_of(bottom, cells // screen.columns + 1)
        if start is not None and self.prompt:
            return self.text(start, bottom), self.prompt, False
        return None

    def cells_before(self, position: tuple[int, int], first: int) -> str:
        row, col = position
        cells: list[str] = []
        for abs_row in range(first, row + 1):
            row_cells = self.screen.row_cells(abs_row)
            cells.extend(row_cells[:col] if abs_row == row else row_cells)
        return "".join(cells)

    def accepted_text(self, abs_row: int, typed_ahead: list[str]) -> str | None:
        """The command on the line ending at `abs_row`, without its prompt.

        `typed_ahead`: texts of lines typed before the line editor started
        (no first key was read on this line): the one its row ends with.
        """
        screen = self.screen
        bottom = screen.logical_rows(abs_row)[-1]
        if self.origin is None and typed_ahead:
            rows = screen.logical_rows(abs_row)
            whole = screen.text_from((rows[0], 0), bottom).rstrip()
            for text in typed_ahead:
                if whole.endswith(text):
                    self.line_prompt = whole[: -len(text)]
                    return text
        start = self.start_of(bottom)
        if start is not None:
            return self.text(start, bottom)
        rows = screen.logical_rows(abs_row)
        whole = screen.text_from((rows[0], 0), bottom).rstrip() if rows else ""
        typed, rest = self.early_typed()
        if typed and whole.endswith(typed):
            # Keys typed before the prompt was drawn (at login, or while the
            # last command ran) are echoed verbatim after it: what precedes
            # them is the prompt.
            self.early = bytearray(rest)
            if whole[: -len(typed)].strip():
                self.prompt = whole[: -len(typed)]
            return typed
        return whole or None

    def text(self, start: tuple[int, int], bottom: int) -> str:
        """Screen text from `start` to the end of `bottom`, right prompt cut."""
        blank = None
        if self.rprompt is not None:
            row, col, right = self.rprompt
            cells = self.screen.row_cells(row)
            if start[0] <= row <= bottom and "".join(cells[col:]).strip() == right:
                blank = (row, col)  # still there, untouched: not typed
        return self.screen.text_from(start, bottom, blank).rstrip()

    def start_of(
        self, bottom: int, rows: int = PROMPT_SEARCH_ROWS
    ) -> tuple[int, int] | None:
        """Where the line being accepted begins, after its prompt.

        Walks up from the last row: a pasted newline puts a line's text on
        several rows, and a completion listing makes readline redraw the
        prompt below where the first key was read.
        """
        screen = self.screen
        top = screen.top_row
        if self.origin is None or self.origin[0] < top:
            # Only the prompt's text to go by: that far up, no further (each
            # line feed of the fallback path may ask).
            top = max(top, bottom - rows)
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


def _suffix_start(cells: list[str], text: str, lowest: int) -> int | None:
    """The cell index from which `cells` read `text` to the end, if they do."""
    joined = ""
    for index in range(len(cells) - 1, lowest - 1, -1):
        joined = cells[index] + joined
        if len(joined) >= len(text):
            return index if joined == text else None
    return None
