"""Command rules: what a command, a program's input or a transfer is matched
on, and what each rule does (README: Command rules).

One TOML file (`rules_file` in agent.toml, `[shell] rules_file` in
shell.toml; default /etc/bastion-audit/rules.toml) holds `[[rule]]` tables,
tried in the order written: a rule matches on the text (an RE2 pattern,
agent/rule_patterns.py), the record's kind, the bastion user, the remote
user, the host, the origin and the time of day, and names its actions. A
matching `allow` rule stops the rules below it. `[alert]` says where alerts
go. audit-tail's `highlight` rules of agent.toml and the built-in ones
(agent/highlight.py) follow the file's rules as rules with the highlight
action. Pure: the file is read by `load_rules`, the rest takes values.
"""

from __future__ import annotations

import enum
import fnmatch
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent import AgentError
from agent.highlight import DEFAULT_STYLE, HighlightRule
from agent.rule_patterns import PatternError, PatternSet, compile_pattern
from agent.syslog import FACILITIES, SyslogError, parse_target
from agent.toml_table import read_toml

DEFAULT_RULES_PATH = Path("/etc/bastion-audit/rules.toml")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOURS_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
_URL_RE = re.compile(r"https?://[^\s/?#@]+(?:[/?#]\S*)?")
MESSAGE_MAX_CHARS = 200
DIRECT = "direct"  # the origin of a tagged ssh started directly (Origin None)
ORIGINS = frozenset({"audit-shell", "web-token", DIRECT})
KINDS = frozenset({"command", "input", "hidden_input", "transfer"})
MAX_LOCK_S = 10 * 365 * 86400


class RuleError(AgentError):
    """A rules file or rule that cannot be used."""


class Action(enum.StrEnum):
    HIGHLIGHT = "highlight"  # audit-tail and the console show it (`risk`)
    ALERT = "alert"  # a webhook POST and/or a syslog line ([alert])
    WARN = "warn"  # one line on the person's terminal
    CUT = "cut"  # the session ends, as strict mode ends it
    LOCK = "lock"  # the bastion user gets no new session for a while
    DENY = "deny"  # the Enter is not sent (where audit-shell relays)
    ALLOW = "allow"  # the rules below this one do not apply


class Highlighter(Protocol):
    """What audit-tail and the exports need of a rule: a name, a style, a test."""

    @property
    def name(self) -> str: ...

    @property
    def style(self) -> str: ...

    def matches(self, command: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Subject:
    """What a rule is matched against: one record with its session's fields."""

    text: str
    kind: str = "command"
    bastion_user: str = ""
    remote_user: str | None = None
    hosts: tuple[str, ...] = ()  # the host as argv names it, the inventory's name
    origin: str = DIRECT
    when: float = 0.0  # epoch seconds


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    actions: tuple[Action, ...]
    pattern_text: str = ""  # "" matches any text
    pattern: Any = None  # RE2
    kinds: frozenset[str] = frozenset({"command"})
    bastion_users: tuple[str, ...] = ()  # globs; () matches anyone
    remote_users: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    origins: frozenset[str] = frozenset()
    hours: tuple[int, int] | None = None  # minutes of the local day, [from, to)
    style: str = DEFAULT_STYLE
    message: str = ""  # warn: the line shown; "" says which rule matched
    lock_for_s: float = 3600.0  # lock: how long; 0 until an auditor unlocks

    def matches(self, command: str) -> bool:
        """The text alone (audit-tail's highlighting)."""
        return self.pattern is None or self.pattern.search(command) is not None

    def applies(self, subject: Subject) -> bool:
        """Everything but the text, which RuleSet.match searches in one pass."""
        if subject.kind not in self.kinds:
            return False
        if self.bastion_users and not _any_glob(
            self.bastion_users, subject.bastion_user
        ):
            return False
        if self.remote_users and not _any_glob(
            self.remote_users, subject.remote_user or ""
        ):
            return False
        if self.hosts and not any(_any_glob(self.hosts, h) for h in subject.hosts):
            return False
        if self.origins and subject.origin not in self.origins:
            return False
        return self.hours is None or _in_hours(self.hours, subject.when)


def _any_glob(globs: Iterable[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


def _in_hours(hours: tuple[int, int], when: float) -> bool:
    local = time.localtime(when)
    minute = local.tm_hour * 60 + local.tm_min
    start, end = hours
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end  # 22:00-06:00 wraps midnight


@dataclass(frozen=True)
class AlertSettings:
    """`[alert]`: where the alert action sends (either or both)."""

    webhook: str = ""  # http(s) URL; the POST's body: schema/alert.schema.json
    webhook_timeout_s: float = 5.0
    webhook_tries: int = 8  # then the alert is given up, shown in the status
    webhook_backoff_s: float = 1.0  # the first wait, doubled each try, <= 60 s
    syslog: str = ""  # udp://HOST:PORT, tcp://HOST:PORT or unix:/dev/log
    syslog_facility: str = "authpriv"

    @property
    def enabled(self) -> bool:
        return bool(self.webhook or self.syslog)


@dataclass(frozen=True)
class RuleSet:
    """The rules in priority order, and where alerts go."""

    rules: tuple[Rule, ...] = ()
    alert: AlertSettings = AlertSettings()
    source: str = ""  # the file, for messages
    extra_highlights: tuple[HighlightRule, ...] = ()  # agent.toml's and built-in
    _patterns: PatternSet = field(default_factory=lambda: PatternSet(()))
    _with_pattern: tuple[int, ...] = ()  # rules[i] for each pattern of the set

    @classmethod
    def of(
        cls,
        rules: Sequence[Rule],
        alert: AlertSettings = AlertSettings(),
        source: str = "",
        extra_highlights: Sequence[HighlightRule] = (),
    ) -> RuleSet:
        indices = tuple(i for i, r in enumerate(rules) if r.pattern is not None)
        return cls(
            tuple(rules),
            alert,
            source,
            tuple(extra_highlights),
            PatternSet([rules[i].pattern for i in indices]),
            indices,
        )

    def match(self, subject: Subject) -> tuple[Rule, ...]:
        """The rules that apply to `subject`, in order, up to an allow rule."""
        found = self._patterns.search(subject.text)
        hits = {self._with_pattern[i] for i in found}
        matched: list[Rule] = []
        for i, rule in enumerate(self.rules):
            if rule.pattern is not None and i not in hits:
                continue
            if not rule.applies(subject):
                continue
            matched.append(rule)
            if Action.ALLOW in rule.actions:
                break
        return tuple(matched)

    @property
    def acting(self) -> bool:
        """Whether any rule does more than highlight (the daemon matches then)."""
        return any(set(r.actions) - {Action.HIGHLIGHT} for r in self.rules)

    @property
    def denying(self) -> bool:
        return any(Action.DENY in r.actions for r in self.rules)

    def highlighters(self) -> tuple[Highlighter, ...]:
        """The highlight rules for audit-tail and `risk`: the file's, then the rest."""
        own = tuple(r for r in self.rules if Action.HIGHLIGHT in r.actions)
        return (*own, *self.extra_highlights)


def denied_by(rules: Iterable[Rule]) -> Rule | None:
    """The first rule of `rules` that denies."""
    return next((r for r in rules if Action.DENY in r.actions), None)


# -- loading ---------------------------------------------------------------

_RULE_KEYS = frozenset(
    {
        "name",
        "pattern",
        "kinds",
        "bastion_users",
        "remote_users",
        "hosts",
        "origins",
        "hours",
        "actions",
        "style",
        "message",
        "lock_for_s",
    }
)


def load_rules(
    path: Path | None,
    extra_highlights: Sequence[HighlightRule] = (),
    must_exist: bool = False,
) -> RuleSet:
    """The rules file at `path` (the default one if None and present)."""
    if path is None:
        if not DEFAULT_RULES_PATH.is_file():
            return RuleSet.of((), extra_highlights=extra_highlights)
        path = DEFAULT_RULES_PATH
    elif not must_exist and not path.exists():
        return RuleSet.of((), source=str(path), extra_highlights=extra_highlights)
    values = read_toml(path, RuleError)
    return parse_rules_file(values, str(path), extra_highlights)


class DenyRulesError(RuleError):
    """The rules audit-shell must deny by cannot be read: no session opens."""


def deny_rules(path: Path) -> RuleSet | None:
    """audit-shell: the rules file's rules when one of them denies, else None.

    A file that is there but cannot be read or used fails closed: its deny
    rules would not hold.
    """
    try:
        rules = load_rules(path)
    except RuleError as e:
        raise DenyRulesError(f"the command rules cannot be used: {e}") from e
    return rules if rules.denying else None


def parse_rules_file(
    values: Mapping[str, Any],
    where: str,
    extra_highlights: Sequence[HighlightRule] = (),
) -> RuleSet:
    """A parsed rules file to a RuleSet; errors name the file, rule and reason."""
    unknown = sorted(set(values) - {"rule", "alert"})
    if unknown:
        raise RuleError(f"{where}: {unknown[0]} is not a known key (rule, alert)")
    alert = _alert(values.get("alert", {}), where)
    items = values.get("rule", [])
    if not isinstance(items, list):
        raise RuleError(f"{where}: rule must be an array of tables ([[rule]])")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        rule = parse_rule(item, f"{where}: rule[{i}]")
        if rule.name in names:
            raise RuleError(f"{where}: rule {rule.name!r}: a second rule of that name")
        names.add(rule.name)
        if Action.ALERT in rule.actions and not alert.enabled:
            raise RuleError(
                f"{where}: rule {rule.name!r}: action alert needs [alert] webhook "
                "or syslog"
            )
        rules.append(rule)
    return RuleSet.of(rules, alert, where, extra_highlights)


def parse_rule(item: Any, at: str) -> Rule:
    if not isinstance(item, dict):
        raise RuleError(f"{at} must be a table")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RuleError(f"{at}: name must be a short word like 'drop-db'")
    at = f"{at.rpartition(':')[0]}: rule {name!r}"
    unknown = sorted(set(item) - _RULE_KEYS)
    if unknown:
        raise RuleError(f"{at}: {unknown[0]} is not a known key")
    actions = _actions(item.get("actions"), at)
    pattern_text = item.get("pattern", "")
    if not isinstance(pattern_text, str):
        raise RuleError(f"{at}: pattern must be a string")
    pattern = None
    if pattern_text:
        try:
            pattern = compile_pattern(pattern_text)
        except PatternError as e:
            raise RuleError(f"{at}: pattern {e}") from e
    origins = _strings(item, "origins", at)
    bad = sorted(set(origins) - ORIGINS)
    if bad:
        raise RuleError(f"{at}: origins: {bad[0]!r} is not one of {sorted(ORIGINS)}")
    kinds = _strings(item, "kinds", at) or ("command",)
    bad = sorted(set(kinds) - KINDS)
    if bad:
        raise RuleError(f"{at}: kinds: {bad[0]!r} is not one of {sorted(KINDS)}")
    style = item.get("style", DEFAULT_STYLE)
    if not isinstance(style, str) or not style.strip():
        raise RuleError(f"{at}: style must be a style like 'bold red'")
    message = item.get("message", "")
    if (
        not isinstance(message, str)
        or len(message) > MESSAGE_MAX_CHARS
        or not message.isprintable()
    ):
        raise RuleError(
            f"{at}: message must be one printable line of at most "
            f"{MESSAGE_MAX_CHARS} characters"
        )
    lock_for = item.get("lock_for_s", 3600.0)
    if (
        isinstance(lock_for, bool)
        or not isinstance(lock_for, (int, float))
        or not 0 <= lock_for <= MAX_LOCK_S
    ):
        raise RuleError(
            f"{at}: lock_for_s must be seconds from 0 (until unlocked) to {MAX_LOCK_S}"
        )
    return Rule(
        name=name,
        actions=actions,
        pattern_text=pattern_text,
        pattern=pattern,
        kinds=frozenset(kinds),
        bastion_users=_strings(item, "bastion_users", at),
        remote_users=_strings(item, "remote_users", at),
        hosts=_strings(item, "hosts", at),
        origins=frozenset(origins),
        hours=_hours(item.get("hours"), at),
        style=style,
        message=message,
        lock_for_s=float(lock_for),
    )


def _actions(value: Any, at: str) -> tuple[Action, ...]:
    if not isinstance(value, list) or not value:
        raise RuleError(f'{at}: actions must be a list like ["alert", "cut"]')
    actions: list[Action] = []
    for v in value:
        try:
            action = Action(v)
        except ValueError as e:
            known = ", ".join(a.value for a in Action)
            raise RuleError(f"{at}: {v!r} is not an action (one of {known})") from e
        if action not in actions:
            actions.append(action)
    if Action.ALLOW in actions and len(actions) > 1:
        raise RuleError(f"{at}: allow stands alone: the rule only stops the others")
    return tuple(actions)


def _strings(item: Mapping[str, Any], key: str, at: str) -> tuple[str, ...]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{at}: {key} must be a list of strings")
    return tuple(value)


def _hours(value: Any, at: str) -> tuple[int, int] | None:
    if value is None:
        return None
    m = _HOURS_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise RuleError(f'{at}: hours must be like "22:00-06:00" (local time)')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, min(h2 * 60 + m2, 24 * 60)


_ALERT_LIMITS = {
    "webhook_timeout_s": (0.1, 60.0),
    "webhook_tries": (1, 100),
    "webhook_backoff_s": (0.01, 60.0),
}


def _alert(value: Any, where: str) -> AlertSettings:
    if not isinstance(value, dict):
        raise RuleError(f"{where}: alert must be a table")
    defaults = AlertSettings()
    kwargs: dict[str, Any] = {}
    for key, v in value.items():
        at = f"{where}: alert.{key}"
        if key not in AlertSettings.__dataclass_fields__:
            raise RuleError(f"{at} is not a known key")
        default = getattr(defaults, key)
        if isinstance(default, str):
            if not isinstance(v, str):
                raise RuleError(f"{at} must be a string")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RuleError(f"{at} must be a number")
        elif isinstance(default, int) and not isinstance(v, int):
            raise RuleError(f"{at} must be a whole number")
        if key in _ALERT_LIMITS:
            low, high = _ALERT_LIMITS[key]
            if not low <= v <= high:
                raise RuleError(f"{at} must be between {low} and {high}")
        kwargs[key] = type(default)(v)
    alert = AlertSettings(**kwargs)
    if alert.webhook and not _URL_RE.fullmatch(alert.webhook):
        raise RuleError(
            f"{where}: alert.webhook must be an http:// or https:// URL "
            "(credentials do not belong in it)"
        )
    if alert.syslog:
        try:
            parse_target(alert.syslog)
        except SyslogError as e:
            raise RuleError(f"{where}: alert.syslog: {e}") from e
    if alert.syslog_facility not in FACILITIES:
        raise RuleError(
            f"{where}: alert.syslog_facility must be one of "
            f"{', '.join(sorted(FACILITIES))}"
        )
    return alert
