"""Stored text on a page: inert, whatever it holds.

Commands, host names, tags and end reasons come from the sessions audited,
so from anyone. Django escapes HTML in every template; on top of that,
`inert` shows every character that would act instead of print (terminal
escapes, other control characters, and the invisible format characters such
as the RTL override U+202E, which reorders what follows it) as its escape,
`\\x1b` or `\\u202e`. Line feeds and tabs stay: a multi-line command is shown
on its lines. Registered as template builtins (web/site.py).
"""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

_KEPT = frozenset("\n\t")


def inert_text(value: Any) -> str:
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c in _KEPT or c.isprintable() else ascii(c)[1:-1] for c in text)


@register.filter
def inert(value: Any) -> str:
    """The value as text that cannot act: escapes shown, not obeyed."""
    return inert_text(value)


@register.filter
def clock(seconds: Any) -> str:
    """Seconds as `h:mm:ss` or `m:ss`, the way the player shows its time."""
    try:
        total = int(float(seconds))
    except (TypeError, ValueError):
        return ""
    hours, rest = divmod(max(total, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
