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

Then which part of the LIKE the trigram index is asked about (`index_probe`):
pg_trgm looks up every word's trigram list and intersects them, so a word on
every row (`srv` of `/srv/`) costs a list of every row and rules out nothing.
Over the same store, the LIKE above cost 70 to 90 ms in the index alone and
its 143,000 candidates 100 ms more; `LIKE '%grep%'` alone, 17 to 25 ms for the
same candidates, checked by two workers in parallel: 110 ms in all. The
probe is chosen from PostgreSQL's own sample of the column (pg_stats).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANY = "%"  # LIKE: any run of characters, newlines included
ONE = "_"  # LIKE: one character (as `.` and a bracket expression match one)
QUANTIFIERS = "*+?"
REFUSED = "|(){}^"  # alternation, groups, bounds; `^` past the start


# A candidate row's heap fetch and recheck cost about ten times a posting
# list's entry: 700 ns against 70 ns in the EXPLAIN ANALYZE above.
RECHECK_WEIGHT = 10.0
# pg_trgm indexes words (letters and digits); one of three is one trigram.
WORD = re.compile(r"[^\W_]{3,}")


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


@dataclass(frozen=True)
class Sample:
    """What PostgreSQL's statistics saw of the commands (pg_stats of the column)."""

    common: tuple[tuple[str, float], ...]  # the most common values, their share
    others: tuple[str, ...]  # the histogram's bounds: a sample of all the rest
    others_share: float  # of the rows, neither common nor NULL

    def share(self, text: str) -> float:
        """About what share of the rows contains `text`; never quite none."""
        share = sum(f for value, f in self.common if text in value)
        if self.others:
            seen = sum(text in value for value in self.others)
            share += self.others_share * seen / len(self.others)
        return max(share, 0.5 / (len(self.common) + len(self.others)))


def index_probe(like: str, sample: Sample | None) -> str:
    """The LIKE (implied by `like`) to ask the trigram index about.

    One of `like`'s literal runs or one of their words, as `%...%`: the one
    whose cost, its words' trigram lists then its candidates' rechecks
    (RECHECK_WEIGHT), the sample puts lowest; of equal ones, the longest (the
    sample cannot tell rare texts apart). `like` itself when there is no
    sample or no candidate (a run needs a word of three to have a trigram;
    without one, the index would be read whole).
    """
    if sample is None:
        return like
    best: tuple[float, int, str] | None = None
    for run in _runs(like):
        words = WORD.findall(run)
        for text in [run, *words] if words else []:
            cost = sum(map(sample.share, WORD.findall(text)))
            cost += RECHECK_WEIGHT * sample.share(text)
            if best is None or (cost, -len(text)) < best[:2]:
                best = (cost, -len(text), text)
    if best is None:
        return like
    return ANY + "".join(map(_literal, best[2])) + ANY


def _runs(like: str) -> list[str]:
    """The literal runs of a LIKE pattern (backslash escapes), unescaped."""
    runs, run = [], ""
    i = 0
    while i < len(like):
        c = like[i]
        if c == "\\" and i + 1 < len(like):
            run += like[i + 1]
            i += 2
            continue
        if c in (ANY, ONE):
            if run:
                runs.append(run)
            run = ""
        else:
            run += c
        i += 1
    return runs + ([run] if run else [])
