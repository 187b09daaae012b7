"""bash history expansion (`!!`, `!$`, `!-2`, `^old^new`): what ran is printed.

When a line holds a history designator, bash expands it, prints the expanded
line and runs that; its history records the expansion too. So the command is
the first line bash prints after the accepted line, not what was on screen.
This module only says whether bash expands a line, and checks that a printed
line can be its expansion; it does not expand anything itself.

The check is on the whole line (issue 14: with `set +H` bash prints no
expansion, and the command's own first line of output replaced it): every
character typed outside the designators must be in the printed line, in
order, with the text before the first designator at its start and the text
after the last at its end.
"""

from __future__ import annotations

import re

# What may follow `!` for bash to start an expansion (bash(1), HISTORY EXPANSION).
_NOT_AFTER_BANG = frozenset(" \t\n=(")
# One designator: the event (`!!`, `!n`, `!-n`, `!?str?`, `!str`, `!$`…), then
# word designators and modifiers (`:1`, `:h`, `:s/a/b/`, `:gs/a/b/`).
_DESIGNATOR_RE = re.compile(
    r"!(?:!|-?\d+|\?[^?\n]*\??|[$^*%]|#|[^\s;&|<>()!:\"'`$^*%][^\s;&|<>()\"'`:]*)?"
    r"(?::(?:[gGa]?s(.)(?:(?!\1).)*\1(?:(?!\1).)*\1?|[^\s;&|<>()\"'`:]*))*"
)


def expansion_prefix(text: str) -> str | None:
    """The text before the first designator if bash would expand `text`, else None."""
    if text.startswith("^"):
        return ""  # quick substitution of the previous command
    single = double = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and not single:
            i += 2
            continue
        if c == "'" and not double:
            single = not single
        elif c == '"' and not single:
            double = not double
        elif c == "!" and not single:
            nxt = text[i + 1] if i + 1 < len(text) else "\n"
            if nxt not in _NOT_AFTER_BANG and not (double and nxt == '"'):
                return text[:i]
        i += 1
    return None


def plausible_expansion(typed: str, printed: str) -> bool:
    """Whether `printed` can be bash's expansion of the whole of `typed`."""
    prefix = expansion_prefix(typed)
    if prefix is None or not printed.strip() or not printed.startswith(prefix):
        return False
    if typed.startswith("^"):
        # ^old^new: the previous command with `new` in it, unless it is empty.
        parts = typed.split("^")
        return len(parts) < 3 or parts[2] in printed
    literals = _literals(typed[len(prefix) :])
    if literals is None:
        return False
    pos = len(prefix)
    for n, literal in enumerate(literals):
        if n == len(literals) - 1:
            # What follows the last designator ends the line.
            return printed.endswith(literal) and len(printed) - len(literal) >= pos
        found = printed.find(literal, pos)
        if found < 0:
            return False
        pos = found + len(literal)
    return True


def _literals(text: str) -> list[str] | None:
    """The typed text between designators; `text` starts at the first one."""
    literals: list[str] = []
    pos = 0
    while True:
        rest = text[pos:]
        start = expansion_prefix(rest)
        if start is None:
            literals.append(rest)
            return literals
        at = pos + len(start)
        literals.append(text[pos:at])
        m = _DESIGNATOR_RE.match(text, at)
        if m is None or m.end() == at:
            return None
        pos = m.end()
