"""bash history expansion (`!!`, `!$`, `!-2`, `^old^new`): what ran is printed.

When a line holds a history designator, bash expands it, prints the expanded
line and runs that; its history records the expansion too. So the command is
the first line bash prints after the accepted line, not what was on screen.
This module only says whether bash expands a line, and checks that a printed
line can be its expansion; it does not expand anything itself.
"""

from __future__ import annotations

# What may follow `!` for bash to start an expansion (bash(1), HISTORY EXPANSION).
_NOT_AFTER_BANG = frozenset(" \t\n=(")


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
    """Whether `printed` can be bash's expansion of `typed`."""
    prefix = expansion_prefix(typed)
    return prefix is not None and printed.startswith(prefix) and bool(printed.strip())
