"""A LIKE pattern that every match of a PostgreSQL regular expression matches too.

Why: a regex search of the fleet store (`command ~ RE`, agent/fleet_queries.py)
costs PostgreSQL's matcher on each row the trigram index admits, 1.5 to 3 µs a
row, where LIKE costs 0.1 to 0.2 µs. pg_trgm's analysis of a regex ignores
punctuation and anchors: over bench/console.py's 1,000,000 commands,
`grep -r /srv/[0-9]+1$` admits all 143,000 that start `grep -r /srv/` and
matches none, 400 to 650 ms; with `LIKE '%grep -r /srv/_%1'` written before it
(a recheck evaluates the conditions in the written order) 200 to 300 ms.

The LIKE is a necessary condition only: the regex still decides. A LIKE that
refused a string the regex matches would drop a hit without a word, so only a
conservative subset of the syntax is translated, each part into something that
admits at least what it matches, and anything else gives None. The subset's
syntax is valid ARE syntax (tests/test_regex_prefilter.py asks PostgreSQL), but
PostgreSQL may still refuse a pattern of it (`a?` 3,000 times then `x`: "too
complex"), with its LIKE then ruling out every row before the regex is ever
compiled: a caller compiles the regex on its own first (agent/fleet_reader.py
does).
"""

from __future__ import annotations

ANY = "%"  # LIKE: any run of characters, newlines included
ONE = "_"  # LIKE: one character (as `.` and a bracket expression match one)
QUANTIFIERS = "*+?"
REFUSED = "|(){}^"  # alternation, groups, bounds; `^` past the start


class _Outside(Exception):
    """The pattern uses something outside the subset: no prefilter."""


def like_prefilter(pattern: str) -> str | None:
    """A LIKE pattern (backslash escapes) matching every string `~ pattern` does.

    `pattern` is a PostgreSQL ARE as `~` takes it: case-sensitive, `^` and `$`
    only at the string's start and end, `.` matching a newline too. None when
    the pattern is outside the subset (this module's docstring) or the LIKE
    would admit about everything (no literal character in it).
    """
    try:
        pieces, start, end = _pieces(pattern)
    except _Outside:
        return None
    if all(p in (ANY, ONE) for p in pieces):
        return None
    like: list[str] = []
    for piece in ([] if start else [ANY]) + pieces + ([] if end else [ANY]):
        if not (piece == ANY and like and like[-1] == ANY):
            like.append(piece)
    return "".join(like)


def _pieces(pattern: str) -> tuple[list[str], bool, bool]:
    """The LIKE pieces (an escaped literal, ONE or ANY), and the two anchors."""
    if not pattern or pattern.startswith("***"):  # empty, or a director
        raise _Outside
    start = pattern.startswith("^")
    end = False
    pieces: list[str] = []
    atom = False  # whether pieces[-1] is an atom a quantifier may follow
    i = 1 if start else 0
    while i < len(pattern):
        c = pattern[i]
        if c in QUANTIFIERS:
            if not atom:  # nothing to repeat, or a quantifier's quantifier
                raise _Outside
            if c == "+":
                pieces.append(ANY)  # once, then anything
            else:
                pieces[-1] = ANY  # `*` and `?`: maybe not at all
            atom = False
            i += 2 if pattern[i + 1 : i + 2] == "?" else 1  # a non-greedy form
            continue
        if c == "$":
            if i != len(pattern) - 1:
                raise _Outside
            end = True
            i += 1
            continue
        if c in REFUSED:
            raise _Outside
        if c == ".":
            pieces.append(ONE)
            i += 1
        elif c == "[":
            i = _bracket_end(pattern, i) + 1
            pieces.append(ONE)
        elif c == "\\":
            # `\` then a letter or digit is a class, constraint, escape or
            # back reference; then anything else, that character. Non-ASCII
            # is left out: whether PostgreSQL counts it alphanumeric depends
            # on the locale.
            following = pattern[i + 1 : i + 2]
            if not following or not following.isascii() or following.isalnum():
                raise _Outside
            pieces.append(_literal(following))
            i += 2
        else:
            pieces.append(_literal(c))
            i += 1
        atom = True
    return pieces, start, end


def _literal(c: str) -> str:
    """One character as LIKE takes it literally (agent/fleet_queries.like's escapes)."""
    return "\\" + c if c in "\\%_" else c


def _bracket_end(pattern: str, at: int) -> int:
    """Where the bracket expression opened at `at` closes (its `]`).

    Members are characters and ranges only: no `[` (classes, collating
    elements, equivalence classes) and no `\\` (escapes, in an ARE's
    brackets); a `-` only first, last or between a range's two ends, which
    must be in order (PostgreSQL refuses them otherwise).
    """
    first = at + 2 if pattern[at + 1 : at + 2] == "^" else at + 1
    close = pattern.find("]", first + 1)  # a `]` first is a member
    if close < 0:
        raise _Outside
    members = pattern[first:close]
    if "[" in members or "\\" in members:
        raise _Outside
    k = 0
    while k < len(members):
        if members[k + 1 : k + 2] == "-" and k + 2 < len(members):
            low, high = members[k], members[k + 2]
            if "-" in (low, high) or low > high:
                raise _Outside
            k += 3
        elif members[k] == "-" and 0 < k < len(members) - 1:
            raise _Outside
        else:
            k += 1
    return close
