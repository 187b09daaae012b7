"""audit-shell's host menu: keys from raw terminal bytes, the menu's state, its view.

The key decoder and the menu state are pure, so odd input (escape sequences,
bytes that are not UTF-8, endless lines) is tested with byte strings. Only
`render()` touches rich, imported there.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field, replace

from agent.inventory import Target

FILTER_MAX_CHARS = 40
ESCAPE_MAX_BYTES = 32  # a longer escape sequence is junk: dropped

# Keys the menu acts on; printable text comes as itself.
ENTER, BACKSPACE, UP, DOWN, PAGE_UP, PAGE_DOWN, HOME, END = (
    "<enter>",
    "<backspace>",
    "<up>",
    "<down>",
    "<pgup>",
    "<pgdn>",
    "<home>",
    "<end>",
)
CLEAR, LEAVE, INTERRUPT = "<ctrl-u>", "<ctrl-d>", "<interrupt>"
_CONTROL = {
    "\r": ENTER,
    "\n": ENTER,
    "\x7f": BACKSPACE,
    "\x08": BACKSPACE,
    "\x15": CLEAR,
    "\x04": LEAVE,
    # Ctrl-C, Ctrl-\, Ctrl-Z: with ISIG off they are bytes, never signals.
    "\x03": INTERRUPT,
    "\x1c": INTERRUPT,
    "\x1a": INTERRUPT,
    "\x10": UP,  # Ctrl-P
    "\x0e": DOWN,  # Ctrl-N
}
_CSI = {"A": UP, "B": DOWN, "H": HOME, "F": END, "5~": PAGE_UP, "6~": PAGE_DOWN}
_CSI.update({"1~": HOME, "4~": END, "7~": HOME, "8~": END})
_SS3 = {"A": UP, "B": DOWN, "H": HOME, "F": END}


@dataclass
class KeyDecoder:
    """Raw terminal bytes to keys, across reads; never raises."""

    _text: codecs.BufferedIncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    _escape: str | None = None  # an escape sequence being read
    _junk: bool = False  # in an overlong sequence: swallow up to its end

    def feed(self, data: bytes) -> list[str]:
        keys: list[str] = []
        for char in self._text.decode(data):
            key = self._char(char)
            if key is not None:
                keys.append(key)
        return keys

    def _char(self, char: str) -> str | None:
        if self._escape is not None:
            return self._escape_char(char)
        if char == "\x1b":
            self._escape = ""
            return None
        if char in _CONTROL:
            return _CONTROL[char]
        if char.isprintable() and char != "\ufffd":
            return char
        return None  # other control characters, undecodable bytes

    def _escape_char(self, char: str) -> str | None:
        assert self._escape is not None
        seq = self._escape + char
        if not char.isprintable():  # ESC then Enter, Ctrl-D, another ESC...
            self._escape, self._junk = None, False
            return self._char(char)
        if self._junk or len(seq) > ESCAPE_MAX_BYTES:
            self._junk = not _csi_final(char)
            self._escape = "" if self._junk else None
            return None
        if seq == "[" or seq == "O" or (seq[0] == "[" and not _csi_final(char)):
            self._escape = seq
            return None
        self._escape = None
        if seq[0] == "[":
            return _CSI.get(seq[1:])
        if seq[0] == "O" and len(seq) == 2:
            return _SS3.get(seq[1])
        return None  # Alt+key and the like: ignored


def _csi_final(char: str) -> bool:
    return "\x40" <= char <= "\x7e" and char != "["


@dataclass(frozen=True)
class MenuState:
    """The menu's targets, the filter typed so far and the highlighted line."""

    targets: tuple[Target, ...]
    filter: str = ""
    selected: int = 0  # index into visible()

    def visible(self) -> list[tuple[int, Target]]:
        """(menu number, target) of the targets that match the filter."""
        needle = self.filter.strip().lower()
        numbered = list(enumerate(self.targets, start=1))
        if not needle:
            return numbered
        return [
            (n, t)
            for n, t in numbered
            if str(n).startswith(needle) or needle in _haystack(t)
        ]

    def chosen(self) -> Target | None:
        """What Enter picks: the number typed, else the highlighted line."""
        needle = self.filter.strip()
        if needle.isdigit() and 1 <= int(needle) <= len(self.targets):
            return self.targets[int(needle) - 1]
        shown = self.visible()
        if not shown:
            return None
        return shown[min(self.selected, len(shown) - 1)][1]

    def key(self, key: str, page: int = 10) -> MenuState:
        """The state after one key (Enter and leaving are the caller's)."""
        count = len(self.visible())
        if key in (UP, DOWN, PAGE_UP, PAGE_DOWN, HOME, END):
            step = {UP: -1, DOWN: 1, PAGE_UP: -page, PAGE_DOWN: page}
            moved = {HOME: 0, END: count - 1}.get(key, self.selected + step.get(key, 0))
            return replace(self, selected=max(0, min(moved, count - 1)))
        if key == BACKSPACE:
            return replace(self, filter=self.filter[:-1], selected=0)
        if key in (CLEAR, INTERRUPT):
            return replace(self, filter="", selected=0)
        if len(key) == 1 and len(self.filter) < FILTER_MAX_CHARS:
            return replace(self, filter=self.filter + key, selected=0)
        return self


Line = tuple[int, "str | tuple[int, Target]"]


def _window(shown: list[tuple[int, Target]], first: int, room: int) -> list[Line]:
    """At most `room` lines from shown[first:]: group names, then their targets."""
    out: list[Line] = []
    group = None
    for index, (number, target) in enumerate(shown[first:], start=first):
        header = target.host.group != group
        if len(out) + (2 if header else 1) > room:
            break
        if header:
            group = target.host.group
            out.append((-1, group))
        out.append((index, (number, target)))
    return out


def _haystack(target: Target) -> str:
    host = target.host
    return f"{target.account.name}@{host.name} {host.address} {host.group}".lower()


@dataclass(frozen=True)
class View:
    """What the screen shows besides the menu itself."""

    title: str
    who: str
    message: str = ""
    rows: int = 24
    cols: int = 80


def render(state: MenuState, view: View) -> str:
    """The whole screen as terminal text (cursor home, lines, clear the rest)."""
    import io

    from rich.console import Console
    from rich.text import Text

    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=True,
        color_system="standard",
        width=max(20, view.cols),
        highlight=False,
        emoji=False,
    )
    # Text objects, never markup: names come from the inventory.
    console.print(Text.assemble((f" {view.title}", "bold"), f"  ·  {view.who}"))
    console.print(Text.assemble(" Filter: ", (state.filter, "bold"), ("▏", "blink")))
    console.print()
    shown = state.visible()
    room = max(3, view.rows - 7)
    selected = min(state.selected, max(0, len(shown) - 1))
    first = max(0, selected - room // 2)
    lines = _window(shown, first, room)
    while first < selected and selected not in [i for i, _ in lines]:
        first += 1  # group headers took the room: scroll until it shows
        lines = _window(shown, first, room)
    if not shown:
        console.print(Text("   nothing matches", style="dim"))
    for index, item in lines:
        if isinstance(item, str):
            console.print(Text(f" {item}", style="bold cyan"))
            continue
        number, target = item
        where = f"{target.host.address}:{target.host.port}"
        line = Text(f" {'>' if index == selected else ' '} {number:>3}  ")
        line.append(f"{target.label:<32} ", style="bold")
        line.append(where, style="dim")
        if index == selected:
            line.stylize("reverse")
        console.print(line, no_wrap=True, overflow="ellipsis")
    console.print()
    console.print(
        Text(
            " ↑↓ select · Enter connect · type to filter or a number · Ctrl-D log out",
            style="dim",
        ),
        no_wrap=True,
        overflow="ellipsis",
    )
    if view.message:
        console.print(Text(f" {view.message}", style="yellow"), no_wrap=True)
    body = out.getvalue().replace("\n", "\x1b[K\n")
    return "\x1b[H" + body + "\x1b[J"
