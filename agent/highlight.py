"""Risky command lines: the rules audit-tail shows in red.

A rule is a name, a regular expression searched in the command line and a
rich style. The built-in rules cover what operators ask to see at a glance
(wiping a disk or the root, opening permissions, piping a download into a
shell, dropping the firewall, hiding one's traces); the configuration can add
rules and switch the built-in ones off (`highlight`, `highlight_builtin`).
Pure: no rich here, so that the daemon can load the configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent import AgentError

DEFAULT_STYLE = "bold red"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The rest of one simple command, up to SPAN_MAX characters. Bounded, because
# Python's re restarts at every occurrence of a rule's first word: with `*`
# here, a stored command of n repeated `rm ` took O(n^2) (60 KB: 32 s), and
# that command is hostile text the exports and fleet events now run the rules on.
SPAN_MAX = 256
_SAME_COMMAND = rf"[^;&|\n]{{0,{SPAN_MAX}}}"


class HighlightError(AgentError):
    """A highlight rule that cannot be used."""


@dataclass(frozen=True, slots=True)
class HighlightRule:
    name: str
    pattern: re.Pattern[str]
    style: str = DEFAULT_STYLE
    # Texts of which a match holds at least one: a command with none of them
    # is passed over without running the pattern (a literal search costs a
    # fraction of a regex that may start anywhere). None: always run it.
    words: tuple[str, ...] = ()
    needles: re.Pattern[str] | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        needles = _literals(self.words) if self.words else None
        object.__setattr__(self, "needles", needles)  # frozen: derived once

    def matches(self, command: str) -> bool:
        if self.needles is not None and self.needles.search(command) is None:
            return False
        return self.pattern.search(command) is not None


def _literals(words: Iterable[str]) -> re.Pattern[str]:
    """One alternation of the literals, grouped by their first character.

    Python's re tries every branch of an alternation at each position; with
    the branches grouped, one. The built-in rules' 20 literals over a command
    holding none: 1.06 µs a search, 0.84 grouped.
    """
    rests: dict[str, set[str]] = {}
    for word in words:
        rests.setdefault(word[0], set()).add(word[1:])
    branches = []
    for first, after in rests.items():
        if "" in after:  # the character alone is a match: the rest adds none
            branches.append(re.escape(first))
        else:
            longest = sorted(after, key=len, reverse=True)
            branches.append(
                f"{re.escape(first)}(?:{'|'.join(map(re.escape, longest))})"
            )
    return re.compile("|".join(branches))


def rule(name: str, needles: tuple[str, ...], pattern: str) -> HighlightRule:
    return HighlightRule(name, re.compile(pattern), DEFAULT_STYLE, needles)


BUILTIN_RULES: tuple[HighlightRule, ...] = (
    # rm with a recursive flag anywhere and `/` or `/*` as an operand.
    rule(
        "rm-root",
        ("rm",),
        rf"\brm\s(?=(?:{_SAME_COMMAND}\s)?-(?:-recursive|[A-Za-z]{{0,32}}[rR]))"
        rf"{_SAME_COMMAND}\s/++\*?(?=\s|$|[;&|])",
    ),
    rule(
        "chmod-open",
        ("chmod",),
        rf"\bchmod\s(?=(?:{_SAME_COMMAND}\s)?-(?:-recursive|[A-Za-z]{{0,32}}R))"
        rf"{_SAME_COMMAND}\s(?:0?777|a\+rwx|ugo\+rwx)\b",
    ),
    rule(
        "pipe-to-shell",
        ("curl", "wget", "fetch"),
        rf"\b(?:curl|wget|fetch)\b{_SAME_COMMAND}\|\s*(?:sudo\s+(?:-\S+\s+)*)?"
        r"(?:ba|z|k|da|fi)?sh\b|\b(?:ba|z)?sh\s+<\(\s*(?:curl|wget)\b",
    ),
    rule(
        "firewall-off",
        ("tables", "nft", "ufw"),
        rf"\bip6?tables(?:-legacy|-nft)?\b{_SAME_COMMAND}"
        r"\s(?:-F\b|--flush\b|-X\b|-P\s+\w+\s+ACCEPT\b)"
        r"|\bnft\s+flush\s+ruleset\b|\bufw\s+disable\b",
    ),
    rule(
        "disk-wipe",
        ("mkfs", "wipefs", "/dev/"),
        rf"\bmkfs(?:\.\w+)?\s|\bwipefs\b|\bdd\b{_SAME_COMMAND}\bof=/dev/(?!null\b|zero\b)"
        rf"|>\s*/dev/(?:sd|vd|xvd|hd|nvme|mmcblk)\w*|\bshred\b{_SAME_COMMAND}\s/dev/",
    ),
    rule("fork-bomb", ("{",), r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
    rule(
        "hide-traces",
        ("HIST", "history", "auditctl", "setenforce", "systemctl"),
        r"\bunset\s+HISTFILE\b|\bhistory\s+-c\b|\bHISTSIZE=0\b|\bHISTFILE=/dev/null\b"
        rf"|\bset\s+\+o\s+history\b|>\s*\S{{0,{SPAN_MAX}}}\.bash_history\b"
        r"|\bauditctl\s+-D\b|\bsetenforce\s+0\b"
        r"|\bsystemctl\s+(?:stop|disable|mask|kill)\s+(?:auditd|rsyslog|"
        r"systemd-journald|bastion-audit)\b",
    ),
    rule(
        "reverse-shell",
        ("/dev/tcp/", "nc", "socat"),
        rf"/dev/tcp/|\bnc(?:at)?\b{_SAME_COMMAND}\s-[A-Za-z]{{0,32}}[ec]\s"
        rf"|\bsocat\b{_SAME_COMMAND}\bexec:",
    ),
)


def parse_rules(value: Any, where: str) -> tuple[HighlightRule, ...]:
    """TOML `highlight = [{name, pattern, style}, ...]` to rules.

    `where` is the file (or "command line") for the error message, which
    names the item and its key: `agent.toml: highlight[2].pattern ...`.
    """
    if isinstance(value, tuple) and all(isinstance(r, HighlightRule) for r in value):
        return value
    if not isinstance(value, list):
        raise HighlightError(f"{where}: highlight must be a list of tables")
    rules: list[HighlightRule] = []
    for i, item in enumerate(value):
        at = f"{where}: highlight[{i}]"
        if not isinstance(item, dict):
            raise HighlightError(f"{at} must be a table with name and pattern")
        unknown = sorted(set(item) - {"name", "pattern", "style"})
        if unknown:
            raise HighlightError(f"{at}: unknown key {unknown[0]!r}")
        name, pattern = item.get("name"), item.get("pattern")
        style = item.get("style", DEFAULT_STYLE)
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise HighlightError(f"{at}.name must be a short word like 'drop-db'")
        if not isinstance(pattern, str) or not pattern:
            raise HighlightError(f"{at}.pattern must be a regular expression")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise HighlightError(
                f"{at}.pattern is not a regular expression: {e}"
            ) from e
        if not isinstance(style, str) or not style.strip():
            raise HighlightError(f"{at}.style must be a style like 'bold red'")
        rules.append(HighlightRule(name, compiled, style))
    return tuple(rules)


def active_rules(
    custom: Sequence[HighlightRule], builtin: bool
) -> tuple[HighlightRule, ...]:
    """The configured rules first (they win), then the built-in ones."""
    return tuple(custom) + (BUILTIN_RULES if builtin else ())


def matching(rules: Iterable[HighlightRule], command: str) -> list[HighlightRule]:
    return [r for r in rules if r.matches(command)]


class Matcher(Protocol):
    """A highlight rule as Risk takes it: a HighlightRule, or a rules file's rule."""

    @property
    def name(self) -> str: ...

    def matches(self, command: str) -> bool: ...


class Risk:
    """The names of the rules a command matches: every output's `risk` field.

    The same short command text comes back often (ls, cd, sudo -i): its
    answer is kept, up to CACHE_MAX texts of up to CACHE_TEXT_MAX characters,
    so an export pays the rules once per text and the memory stays bounded.
    """

    CACHE_MAX = 4096
    CACHE_TEXT_MAX = 256

    def __init__(self, rules: Sequence[Matcher]) -> None:
        self.rules = tuple(rules)
        self._known: dict[str, tuple[str, ...]] = {}
        # All the built-in rules' literals at once: most commands hold none,
        # and then only the rules without literals (the configuration's own,
        # the rules file's) run.
        words = [getattr(r, "words", ()) for r in self.rules]
        self._any = _literals(w for ws in words for w in ws) if any(words) else None
        self._unfiltered = tuple(
            r for r, ws in zip(self.rules, words, strict=True) if not ws
        )

    def names(self, command: str) -> tuple[str, ...]:
        known = self._known.get(command)
        if known is not None:
            return known
        if self._any is not None and self._any.search(command) is None:
            unfiltered = self._unfiltered
            names = (
                tuple(r.name for r in unfiltered if r.matches(command))
                if unfiltered
                else ()
            )
        else:
            names = tuple(r.name for r in self.rules if r.matches(command))
        if len(command) > self.CACHE_TEXT_MAX:
            return names
        if len(self._known) >= self.CACHE_MAX:
            self._known.clear()
        self._known[command] = names
        return names
