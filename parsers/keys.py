"""The keys a person typed, one line per Enter: what lets a screen line count.

A line on the screen is accepted only when an Enter key read from the person
accepted it (issue 14: printed text that looks like a prompt and a command is
no command). The keys of each line are kept here, in memory only, until a
line is matched with them: a line typed with plain keys must read as those
keys; one edited with keys a line editor interprets (Tab, arrows, Ctrl-R) is
taken as the screen shows it. What is never matched is counted as unparsed,
never stored.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

ENTER_KEYS = b"\r\n"
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
MAX_LINE_BYTES = 64 << 10  # keys kept per line to match against; past it: unknown
MAX_PENDING_LINES = 64  # Enters not yet matched; older ones count as unparsed
# Where a line may really begin: keys before it went to the program that was
# running (a `q` for top), not to the line. The first reads of a line, and
# where a line editor started reading, are tried.
MAX_CUTS = 32
MAX_CUT_LINE_BYTES = 4096  # a longer line is matched whole only
MAX_TYPED_TEXTS = 16
_ERASE = "\x7f\x08"
_SHELL_ESCAPE_RE = re.compile(r"\s*(:!|!)\S")  # vim's :!cmd, less's !cmd
# A key other than plain text, erase and kill: an escape sequence (arrows,
# Alt-x) or another control key (Tab, Ctrl-R, Ctrl-A, …).
_OTHER_KEY_RE = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|.)?|[\x00-\x07\x09-\x14\x16-\x1f]"
)
_KILL = "\x15"  # Ctrl-U: both the kernel and readline erase the whole line


@dataclass(slots=True)
class KeyLine:
    """The keys typed up to one Enter (or so far, for the line being typed)."""

    start: float
    end: float
    alt: bool = False  # typed while a full-screen program had the screen
    data: bytearray = field(default_factory=bytearray)
    unknown: bool = False  # too long to keep, or from before a restart
    cuts: list[int] = field(default_factory=list)  # offsets of later reads
    _candidates: list[str] | None = None  # computed once per change
    _text: str | None = None
    _text_known: bool = False

    def add(self, data: bytes, time: float) -> None:
        self.end = time
        self._candidates = None
        self._text_known = False
        if len(self.data) + len(data) > MAX_LINE_BYTES:
            self.unknown = True
            self.data.clear()
            self.cuts.clear()
        elif not self.unknown:
            self.cut()
            self.data += data

    def cut(self) -> None:
        """A line may begin here (a new read, a line editor started)."""
        self._candidates = None
        if (
            self.data
            and len(self.cuts) < MAX_CUTS
            and self.cuts[-1:] != [len(self.data)]
        ):
            self.cuts.append(len(self.data))

    def typed_line(self, shown: str) -> str:
        """What the line was: the screen's text, or the plain keys that made it.

        Plain keys cannot make more than they spell: when the screen shows
        them and more after (cells left over by a redraw, an autosuggestion
        not cleared), the keys are the line.
        """
        typed = self.text
        if typed is not None and shown.strip() != typed.strip():
            stripped = typed.strip()
            if stripped and shown.strip().startswith(stripped):
                return stripped
        return shown

    def matches(self, wanted: str) -> bool:
        """Whether these keys can have made the line `wanted`.

        Plain keys (from some read on) must spell it. Keys a line editor
        reads otherwise (Tab, arrows, Ctrl-R) make what the screen shows, but
        what was typed after the last of them is in it: Ctrl-R `need` finds
        `echo needle`, and a redraw of some older line is no match.
        """
        if self.unknown:
            return True
        if self.text is not None:
            candidates = self.candidates()
            return wanted in candidates or (
                bool(candidates[0]) and wanted.startswith(candidates[0])
            )
        return any(tail in wanted for tail in self.tails())

    def tails(self) -> list[str]:
        """Plain keys typed after the last other key, from each read on."""
        end = 0
        for m in _OTHER_KEY_RE.finditer(self.data):
            end = m.end()
        texts = []
        for start in (end, *(cut for cut in self.cuts if cut > end)):
            typed = _cooked(bytes(self.data[start:]))
            if typed is not None:
                texts.append(typed.strip())
        return texts or [""]

    def candidates(self) -> list[str]:
        """What plain keys typed from each read on make, longest first."""
        if self._candidates is not None:
            return self._candidates
        texts: list[str] = []
        if not self.unknown:
            cuts = self.cuts if len(self.data) <= MAX_CUT_LINE_BYTES else []
            for start in (0, *cuts):
                typed = _cooked(bytes(self.data[start:]))
                if typed is not None and typed.strip() not in texts:
                    texts.append(typed.strip())
        self._candidates = texts
        return texts

    @property
    def text(self) -> str | None:
        """The line as plain keys make it; None when other keys edited it."""
        if self.unknown:
            return None
        if not self._text_known:
            self._text = _cooked(bytes(self.data))
            self._text_known = True
        return self._text

    @property
    def visible(self) -> bool:
        """Whether the keys would have drawn anything but blanks, echoed."""
        typed = self.text
        return typed is None or bool(typed.strip())

    @property
    def printable(self) -> int:
        """How many keys of the line would have shown, had they been echoed."""
        if self.unknown:
            return 1
        text = self.data.decode("utf-8", "replace")
        return sum(1 for char in text if char.isprintable())


def _cooked(data: bytes) -> str | None:
    """Plain keys as a line: erase and kill applied; None for any other key.

    A bracketed paste is plain text, its newlines part of the line.
    """
    try:
        chars = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[str] = []
    if "\x1b[200~" in chars:
        pieces = []
        for n, part in enumerate(chars.split("\x1b[200~")):
            if n:
                pasted, end, after = part.partition("\x1b[201~")
                if not end:
                    return None
                out_of_paste = _cooked(after.encode())
                if out_of_paste is None:
                    return None
                pieces.append(pasted.replace("\r\n", "\n").replace("\r", "\n"))
                pieces.append(out_of_paste)
            else:
                before = _cooked(part.encode())
                if before is None:
                    return None
                pieces.append(before)
        return "".join(pieces)
    for char in chars:
        if char in _ERASE:
            if out:
                out.pop()
        elif char in _KILL:
            out.clear()
        elif char.isprintable():
            out.append(char)
        else:
            return None  # Tab, ESC (arrows), Ctrl-R, Ctrl-W, …: the editor's
    return "".join(out)


@dataclass(slots=True)
class Unparsed:
    """Keys typed that became no command, input or secret (issue 14)."""

    keys: int = 0
    first: float | None = None
    last: float | None = None

    def add(self, line: KeyLine) -> None:
        keys = line.printable
        if not keys:
            return
        self.keys += keys
        self.first = line.start if self.first is None else min(self.first, line.start)
        self.last = line.end if self.last is None else max(self.last, line.end)


class KeyLog:
    """Lines of keys waiting for the screen line they made."""

    def __init__(self, pending_enters: int = 0) -> None:
        # After a restart the keys of lines typed ahead are not known, only
        # that their Enters were pressed (Checkpoint.pending_enters).
        self.pending: deque[KeyLine] = deque(
            KeyLine(0.0, 0.0, unknown=True) for _ in range(pending_enters)
        )
        self.current: KeyLine | None = None
        self.pasting = False
        self.unparsed = Unparsed()

    def add(self, data: bytes, time: float, alt: bool) -> int:
        """Record keys; the number of Enters among them.

        A terminal brackets a paste (ESC[200~ … ESC[201~) only for a program
        that asked for it (ESC[?2004h), a line editor that takes a newline
        pasted there as part of the line, no Enter.
        """
        enters = 0
        pos = 0
        while pos < len(data):
            if self.pasting:
                end = data.find(PASTE_END, pos)
                stop = len(data) if end < 0 else end + len(PASTE_END)
                self._line(time, alt).add(data[pos:stop], time)
                pos = stop
                self.pasting = end < 0
                continue
            cut = min(
                (i for i in (data.find(b"\r", pos), data.find(b"\n", pos)) if i >= 0),
                default=-1,
            )
            paste = data.find(PASTE_START, pos)
            if paste >= 0 and (cut < 0 or paste < cut):
                self._line(time, alt).add(data[pos : paste + len(PASTE_START)], time)
                pos = paste + len(PASTE_START)
                self.pasting = True
                continue
            if cut < 0:
                self._line(time, alt).add(data[pos:], time)
                break
            line = self._line(time, alt)
            line.add(data[pos:cut], time)
            self.current = None
            self.pending.append(line)
            enters += 1
            if len(self.pending) > MAX_PENDING_LINES:
                self.unparsed.add(self.pending.popleft())
            pos = cut + 1
        return enters

    def _line(self, time: float, alt: bool) -> KeyLine:
        if self.current is None:
            self.current = KeyLine(time, time, alt)
        return self.current

    def cancel(self) -> None:
        """Ctrl-C: the kernel flushes what was typed ahead; the line is given up."""
        self.pending.clear()
        self.current = None
        self.pasting = False

    def leave_full_screen(self) -> list[str]:
        """Keys typed into a full-screen program were its keys, not lines.

        But for shell escapes (vim's `:!cmd`, less's `!cmd`), which leave its
        screen to run: those lines, as plain keys spell them, are returned.
        """
        escapes = []
        for line in self.pending:
            typed = line.text if line.alt else None
            if typed is not None and _SHELL_ESCAPE_RE.match(typed):
                escapes.append(typed.strip())
        self.pending = deque(line for line in self.pending if not line.alt)
        if self.current is not None and self.current.alt:
            self.current = None
        return escapes

    def take(self, text: str, strict: bool = True) -> KeyLine | None:
        """The pending line that made `text`, dropping older unmatched ones.

        A line of plain keys matches only its own text; a line edited with
        other keys matches any. Without either, None: no Enter made `text`
        (with `strict` false, the oldest pending line is taken all the same).
        """
        wanted = text.strip()
        chosen = None
        for index, line in enumerate(self.pending):
            if line.matches(wanted):
                chosen = index
                break
        if chosen is None:
            if strict or not self.pending:
                return None
            chosen = 0
        for _ in range(chosen):
            self.unparsed.add(self.pending.popleft())
        return self.pending.popleft()

    def line_editor_started(self) -> None:
        """Keys typed so far may have gone to the program that just ended."""
        if self.current is not None:
            self.current.cut()

    def edited(self) -> bool:
        """Whether a pending line was typed with keys other than plain ones."""
        return any(line.text is None for line in self.pending)

    def longest(self) -> int:
        """The most keys (bytes) a pending line holds."""
        return max((len(line.data) for line in self.pending), default=0)

    def oldest(self) -> KeyLine | None:
        return self.pending[0] if self.pending else None

    def spend_oldest(self) -> KeyLine | None:
        return self.pending.popleft() if self.pending else None

    def typed_texts(self) -> list[str]:
        """Texts of pending plain-key lines, oldest first (see candidates).

        At most MAX_TYPED_TEXTS: each line feed of the fallback path looks at
        them all, so many pending lines cannot make output costly.
        """
        texts: list[str] = []
        for line in self.pending:
            texts.extend(text for text in line.candidates() if text)
            if len(texts) >= MAX_TYPED_TEXTS:
                return texts[:MAX_TYPED_TEXTS]
        return texts

    def give_up(self) -> None:
        """Whatever is pending will never be matched (end, lost track)."""
        for line in self.pending:
            self.unparsed.add(line)
        self.pending.clear()
        if self.current is not None:
            self.unparsed.add(self.current)
            self.current = None
