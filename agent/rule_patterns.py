"""A rule's regular expression: compiled by RE2, refused when it would backtrack.

Rules match hostile text (what anyone typed, up to megabytes of a paste) on
the ingest's path and before an Enter is sent, so a pattern must cost time
linear in the text whatever it is. Python's re does not: `\\w+@\\w+` takes
0.24 s on 4,096 letters and 4.5 s on 20,000 (quadratic), `(a+)+$` is
exponential. RE2 (google-re2) runs every pattern it accepts in linear time.

At load a pattern is refused, naming why, when RE2 cannot run it (a
backreference or a lookaround needs backtracking), when Python's parser
does not accept it either (the rules use one syntax), or when it has the
shape of catastrophic backtracking (a repetition inside an unbounded
repetition, or an unbounded repetition of alternatives that can begin with
the same character): RE2 would run it, but it is never what was meant and
it would hang any backtracking tool the same file is used with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from re import _constants as _c  # type: ignore[attr-defined]  # Python's own parser
from re import _parser as _sre  # type: ignore[attr-defined]
from typing import Any

import re2

from agent import AgentError

MAX_PATTERN_CHARS = 4096
# RE2's memory for one compiled program and its DFA cache; past it RE2 falls
# back to its NFA, still linear.
MAX_MEM_BYTES = 8 << 20


class PatternError(AgentError):
    """A rule's pattern that cannot be used: the reason."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # else RE2 writes every refusal to stderr
    options.max_mem = MAX_MEM_BYTES
    return options


def compile_pattern(text: str) -> Any:
    """`text` as an RE2 pattern, or PatternError saying why not."""
    if not text:
        raise PatternError("is empty")
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"is longer than {MAX_PATTERN_CHARS} characters")
    try:
        parsed = _sre.parse(text)
    except re.error as e:
        raise PatternError(f"is not a regular expression: {e}") from e
    why = _backtracking(parsed, inside_unbounded=False)
    if why:
        raise PatternError(f"can backtrack catastrophically: {why}")
    try:
        return re2.compile(text, _options())
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args else str(e)
        raise PatternError(f"is not one RE2 can run in linear time: {reason}") from e


class PatternSet:
    """Many patterns searched in a text: which of them occur.

    One RE2 of them all, `(?:p1)|(?:p2)|...`, answers first whether any
    occurs (most commands match no rule: one pass, not one per rule); then
    each is searched alone. Not an RE2 Set: when its DFA runs out of memory
    (200 patterns with `.*` do) a Set reports no match at all, where a single
    RE2 falls back on its NFA and still answers.
    """

    def __init__(self, patterns: Sequence[Any]) -> None:
        self._patterns = tuple(patterns)
        self._any: Any = None
        if len(self._patterns) > 1:
            joined = "|".join(f"(?:{p.pattern})" for p in self._patterns)
            try:
                self._any = re2.compile(joined, _options())
            except re2.error:
                self._any = None  # too big for one program: each alone

    def search(self, text: str) -> frozenset[int]:
        """The indices of the patterns that occur in `text`."""
        if self._any is not None and self._any.search(text) is None:
            return frozenset()
        return frozenset(
            i for i, p in enumerate(self._patterns) if p.search(text) is not None
        )


# -- the shapes that backtrack ----------------------------------------------

_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None))


def _backtracking(items: Any, inside_unbounded: bool) -> str:
    """What in a parsed pattern backtracks catastrophically; "" if nothing."""
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            unbounded = high == _c.MAXREPEAT
            if inside_unbounded and (high != low or _can_vary(body)):
                return "a repetition inside an unbounded repetition, like (a+)+"
            if unbounded:
                overlap = _overlapping_branches(body)
                if overlap:
                    return overlap
            why = _backtracking(body, inside_unbounded or (unbounded and high > 1))
            if why:
                return why
        elif op == _c.SUBPATTERN:
            why = _backtracking(av[-1], inside_unbounded)
            if why:
                return why
        elif op == _c.BRANCH:
            for branch in av[1]:
                why = _backtracking(branch, inside_unbounded)
                if why:
                    return why
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            why = _backtracking(av[1], inside_unbounded)
            if why:
                return why
    return ""


def _can_vary(items: Any) -> bool:
    """Whether the parsed `items` hold a repetition that can match more than once."""
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            if high != low or _can_vary(body):
                return True
        elif (
            op == _c.SUBPATTERN
            and _can_vary(av[-1])
            or op == _c.BRANCH
            and any(_can_vary(b) for b in av[1])
        ):
            return True
    return False


def _overlapping_branches(body: Any) -> str:
    """An alternation repeated without bound whose branches can start alike."""
    for op, av in body:
        if op == _c.SUBPATTERN:
            return _overlapping_branches(av[-1])
        if op != _c.BRANCH:
            return ""
        seen: list[frozenset[str]] = []
        for branch in av[1]:
            first = _first_chars(branch)
            if first is None or any(_meet(first, s) for s in seen):
                return (
                    "an unbounded repetition of alternatives that can begin "
                    "with the same character, like (a|ab)+"
                )
            seen.append(first)
        return ""
    return ""


_CATEGORY_SAMPLE = {
    _c.CATEGORY_DIGIT: "digit",
    _c.CATEGORY_WORD: "word",
    _c.CATEGORY_SPACE: "space",
}


def _first_chars(items: Any) -> frozenset[str] | None:
    """Characters (or class names) a branch can begin with; None: anything."""
    for op, av in items:
        if op == _c.LITERAL:
            return frozenset({chr(av)})
        if op == _c.IN:
            found: set[str] = set()
            for kind, value in av:
                if kind == _c.LITERAL:
                    found.add(chr(value))
                elif kind == _c.RANGE and value[1] - value[0] < 256:
                    found.update(chr(c) for c in range(value[0], value[1] + 1))
                elif kind == _c.CATEGORY and value in _CATEGORY_SAMPLE:
                    found.add(_CATEGORY_SAMPLE[value])
                else:
                    return None
            return frozenset(found)
        if op == _c.SUBPATTERN:
            return _first_chars(av[-1])
        if op == _c.AT:
            continue  # ^, $, \b take no character
        return None
    return frozenset()  # an empty branch


_CLASSES = {"digit": r"\d", "word": r"\w", "space": r"\s"}
_CLASSES_MEET = {frozenset({"digit", "word"})}


def _meet(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two sets of first characters (and class names) share one."""
    if a & b:
        return True
    for names, chars in ((a, b), (b, a)):
        for name in names & _CLASSES.keys():
            for ch in chars:
                if ch in _CLASSES:
                    if frozenset({name, ch}) in _CLASSES_MEET:
                        return True
                elif re.fullmatch(_CLASSES[name], ch):
                    return True
    return False
