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
from dataclasses import dataclass
from typing import Any, Protocol

from agent import AgentError

DEFAULT_STYLE = "bold red"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A shell word boundary that stays inside one simple command.
_SAME_COMMAND = r"[^;&|\n]*"
_COMMAND_END = re.compile(r"[;&|\n]")
# How much of a command the rules see. The built-in ones are linear, but
# Python's re costs about a microsecond per character and rule; a configured
# rule may backtrack. A longer command is flagged TOO_LONG for what is unseen.
BUILTIN_MAX_CHARS = 16384
CUSTOM_MAX_CHARS = 4096


class HighlightError(AgentError):
    """A highlight rule that cannot be used."""


@dataclass(frozen=True, slots=True)
class PerCommand:
    """`trigger` then `rest`, tried once per simple command, at its first trigger.

    A regex `trigger{_SAME_COMMAND}…` tries every occurrence of the trigger
    and scans on to the end of its command each time: quadratic on
    `rm rm rm …` (seconds for 16 KB). Each `rest` here begins by scanning its
    command, so what matches after a later trigger of the same command also
    matches after the first one: trying the first alone finds the same, and
    every character is looked at a bounded number of times.
    """

    trigger: re.Pattern[str]
    rest: re.Pattern[str]

    def found_in(self, text: str) -> bool:
        pos = 0
        while (found := self.trigger.search(text, pos)) is not None:
            if self.rest.match(text, found.end()):
                return True
            # On from the end of the trigger's command (a trigger's `\s` may
            # be the newline that ends it).
            end = _COMMAND_END.search(text, found.start())
            if end is None:
                return False
            pos = end.end()
        return False


def per_command(trigger: str, rest: str) -> PerCommand:
    return PerCommand(re.compile(trigger), re.compile(rest))


Part = re.Pattern[str] | PerCommand


@dataclass(frozen=True, slots=True)
class HighlightRule:
    """A name and what it flags: any of its parts found in the command."""

    name: str
    parts: tuple[Part, ...]
    style: str = DEFAULT_STYLE
    max_chars: int = CUSTOM_MAX_CHARS  # how much of a command it sees

    def matches(self, command: str) -> bool:
        text = command[: self.max_chars]
        for part in self.parts:
            if isinstance(part, PerCommand):
                if part.found_in(text):
                    return True
            elif part.search(text) is not None:
                return True
        return False


def rule(name: str, *parts: str | PerCommand) -> HighlightRule:
    """A built-in rule; its plain parts are linear regexes (sre scans for them)."""
    compiled = tuple(p if isinstance(p, PerCommand) else re.compile(p) for p in parts)
    return HighlightRule(name, compiled, max_chars=BUILTIN_MAX_CHARS)


BUILTIN_RULES: tuple[HighlightRule, ...] = (
    # rm with a recursive flag anywhere and `/` or `/*` as an operand.
    rule(
        "rm-root",
        per_command(
            r"\brm\s",
            rf"(?=(?:{_SAME_COMMAND}\s)?-(?:-recursive|[A-Za-z]*[rR]))"
            rf"{_SAME_COMMAND}\s/+\*?(?=\s|$|[;&|])",
        ),
    ),
    rule(
        "chmod-open",
        per_command(
            r"\bchmod\s",
            rf"(?=(?:{_SAME_COMMAND}\s)?-(?:-recursive|[A-Za-z]*R))"
            rf"{_SAME_COMMAND}\s(?:0?777|a\+rwx|ugo\+rwx)\b",
        ),
    ),
    rule(
        "pipe-to-shell",
        per_command(
            r"\b(?:curl|wget|fetch)\b",
            rf"{_SAME_COMMAND}\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:ba|z|k|da|fi)?sh\b",
        ),
        r"\b(?:ba|z)?sh\s+<\(\s*(?:curl|wget)\b",
    ),
    rule(
        "firewall-off",
        per_command(
            r"\bip6?tables(?:-legacy|-nft)?\b",
            rf"{_SAME_COMMAND}\s(?:-F\b|--flush\b|-X\b|-P\s+\w+\s+ACCEPT\b)",
        ),
        r"\bnft\s+flush\s+ruleset\b|\bufw\s+disable\b",
    ),
    rule(
        "disk-wipe",
        r"\bmkfs(?:\.\w+)?\s|\bwipefs\b|>\s*/dev/(?:sd|vd|xvd|hd|nvme|mmcblk)\w*",
        per_command(r"\bdd\b", rf"{_SAME_COMMAND}\bof=/dev/(?!null\b|zero\b)"),
        per_command(r"\bshred\b", rf"{_SAME_COMMAND}\s/dev/"),
    ),
    rule("fork-bomb", r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
    rule(
        "hide-traces",
        r"\bunset\s+HISTFILE\b|\bhistory\s+-c\b|\bHISTSIZE=0\b|\bHISTFILE=/dev/null\b"
        # [^\s>]: a run of `>>>>` is not scanned again from each `>`.
        r"|\bset\s+\+o\s+history\b|>\s*[^\s>]*\.bash_history\b"
        r"|\bauditctl\s+-D\b|\bsetenforce\s+0\b"
        r"|\bsystemctl\s+(?:stop|disable|mask|kill)\s+(?:auditd|rsyslog|"
        r"systemd-journald|bastion-audit)\b",
    ),
    rule(
        "reverse-shell",
        r"/dev/tcp/",
        per_command(r"\bnc(?:at)?\b", rf"{_SAME_COMMAND}\s-[A-Za-z]*[ec]\s"),
        per_command(r"\bsocat\b", rf"{_SAME_COMMAND}\bexec:"),
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
        rules.append(HighlightRule(name, (compiled,), style))
    return tuple(rules)


def active_rules(
    custom: Sequence[HighlightRule], builtin: bool
) -> tuple[HighlightRule, ...]:
    """The configured rules first (they win), then the built-in ones."""
    return tuple(custom) + (BUILTIN_RULES if builtin else ())


# Not a pattern: what matching() adds when a command is longer than a rule sees.
TOO_LONG = HighlightRule("too-long", (), "bold yellow", 0)


class Flagging(Protocol):
    """A rule as audit-tail and the console use it (also agent/rules.py's)."""

    @property
    def name(self) -> str: ...

    @property
    def style(self) -> str: ...

    def matches(self, command: str) -> bool: ...


def matching(rules: Iterable[Flagging], command: str) -> list[Flagging]:
    """The rules that flag `command`; TOO_LONG last if some rule saw only part.

    A rule without `max_chars` (the rules file's, RE2: linear) sees it all.
    """
    found: list[Flagging] = []
    unseen = False
    for r in rules:
        if r.matches(command):
            found.append(r)
        unseen = unseen or len(command) > getattr(r, "max_chars", len(command))
    return [*found, TOO_LONG] if unseen else found
