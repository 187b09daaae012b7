"""The rules file: what is refused at load (file, rule, reason), what matches."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, rules_of
from agent.highlight import BUILTIN_RULES
from agent.locks import Lock, read_lock, refusal, remove_lock, write_lock
from agent.rules import (
    Action,
    RuleError,
    Subject,
    denied_by,
    parse_rules_file,
)

WEBHOOK = {"webhook": "http://127.0.0.1:9/hook"}


def rules(*items: dict, alert: dict | None = None):
    return parse_rules_file({"rule": list(items), "alert": alert or WEBHOOK}, "r.toml")


def refused(item: dict) -> str:
    with pytest.raises(RuleError) as e:
        rules(item)
    return str(e.value)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(x", "is not a regular expression"),
        (r"(a)\1", "is not one RE2 can run in linear time"),
        ("(?=x)y", "is not one RE2 can run in linear time"),
        ("(a+)+$", "can backtrack catastrophically"),
        (r"(\w+\s?)+$", "can backtrack catastrophically"),
        ("(x|.)+", "can backtrack catastrophically"),
        ("(?:x*)*y", "can backtrack catastrophically"),
    ],
)
def test_a_bad_pattern_is_refused_naming_file_rule_and_reason(
    pattern: str, reason: str
) -> None:
    message = refused({"name": "bad-one", "pattern": pattern, "actions": ["cut"]})
    assert message.startswith("r.toml: rule 'bad-one': pattern ")
    assert reason in message


@pytest.mark.parametrize(
    "pattern",
    [r"(?i)\bdrop\s+database\b", r"curl.*\|\s*sh", "(ab)+", "(foo|bar)+", r"\w+@\w+"],
)
def test_ordinary_patterns_load(pattern: str) -> None:
    rules({"name": "ok", "pattern": pattern, "actions": ["highlight"]})


def test_other_mistakes_are_refused() -> None:
    assert "'explode' is not an action" in refused(
        {"name": "a", "pattern": "x", "actions": ["explode"]}
    )
    assert "actions must be a list" in refused({"name": "a", "pattern": "x"})
    assert "colour is not a known key" in refused(
        {"name": "a", "actions": ["cut"], "colour": "red"}
    )
    assert "hours must be like" in refused(
        {"name": "a", "actions": ["cut"], "hours": "late"}
    )
    assert "'ssh' is not one of" in refused(
        {"name": "a", "actions": ["cut"], "origins": ["ssh"]}
    )
    assert "allow stands alone" in refused({"name": "a", "actions": ["allow", "cut"]})
    with pytest.raises(RuleError, match="action alert needs"):
        parse_rules_file({"rule": [{"name": "a", "actions": ["alert"]}]}, "r.toml")
    with pytest.raises(RuleError, match="second rule of that name"):
        rules({"name": "a", "actions": ["cut"]}, {"name": "a", "actions": ["warn"]})
    with pytest.raises(RuleError, match="alert.webhook must be an http"):
        rules({"name": "a", "actions": ["alert"]}, alert={"webhook": "ftp://x"})


def test_matching_on_every_field_in_priority_order() -> None:
    rs = rules(
        {"name": "ok-build", "pattern": r"rm -rf /tmp/build\b", "actions": ["allow"]},
        {
            "name": "rm-prod",
            "pattern": r"\brm\s+-rf\b",
            "actions": ["deny", "alert"],
            "hosts": ["db*"],
            "bastion_users": ["ali*"],
            "remote_users": ["root"],
            "origins": ["audit-shell"],
        },
        {
            "name": "programs",
            "pattern": "DROP",
            "actions": ["warn"],
            "kinds": ["input"],
        },
    )
    base = Subject(
        "rm -rf /var",
        bastion_user="alice",
        remote_user="root",
        hosts=("10.0.0.5", "db1"),
        origin="audit-shell",
    )
    assert [r.name for r in rs.match(base)] == ["rm-prod"]
    assert denied_by(rs.match(base)).name == "rm-prod"  # type: ignore[union-attr]
    for other in (
        Subject("rm -rf /var", "command", "bob", "root", ("db1",), "audit-shell"),
        Subject("rm -rf /var", "command", "alice", "app", ("db1",), "audit-shell"),
        Subject("rm -rf /var", "command", "alice", "root", ("web1",), "audit-shell"),
        Subject("rm -rf /var", "command", "alice", "root", ("db1",), "direct"),
        Subject(
            "rm -rf /tmp/build", "command", "alice", "root", ("db1",), "audit-shell"
        ),
    ):
        assert not any(Action.DENY in r.actions for r in rs.match(other)), other
    assert [r.name for r in rs.match(Subject("DROP table", kind="input"))] == [
        "programs"
    ]
    assert rs.match(Subject("DROP table")) == ()  # a command, not an input


def test_hours_of_the_local_day_wrap_midnight() -> None:
    rs = rules({"name": "night", "actions": ["alert"], "hours": "22:00-06:00"})
    day = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))
    night = time.mktime((2026, 12, 1, 23, 30, 0, 0, 0, -1))
    early = time.mktime((2026, 12, 2, 5, 59, 0, 0, 0, -1))
    assert rs.match(Subject("ls", when=day)) == ()
    assert rs.match(Subject("ls", when=night)) and rs.match(Subject("ls", when=early))


def test_a_long_hostile_text_stays_cheap() -> None:
    many = [
        {"name": f"r{i}", "pattern": rf"\bcmd{i}\s+--x\b.*\|\s*sh", "actions": ["warn"]}
        for i in range(200)
    ]
    rs = rules(*many)
    t0 = time.process_time()
    rs.match(Subject("a" * 20000))
    rs.match(Subject("cmd1 --x " * 2000))
    # Generous (timing belongs to bench.rules): Python's re takes seconds on
    # the first text for one pattern like \w+@\w+.
    assert time.process_time() - t0 < 5.0


def test_the_highlight_keys_of_agent_toml_go_on_working(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        '[[rule]]\nname = "drop-db"\npattern = "(?i)drop database"\n'
        'actions = ["highlight", "warn"]\n'
    )
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        f'rules_file = "{rules_file}"\n'
        'highlight = [{ name = "prod", pattern = "prod-db" }]\n'
    )
    rs = rules_of(load_config(config_file))
    names = [h.name for h in rs.highlighters()]
    assert names[:2] == ["drop-db", "prod"]
    assert names[2:] == [r.name for r in BUILTIN_RULES]
    assert rs.acting
    config_file.write_text(f'rules_file = "{tmp_path / "missing.toml"}"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        rules_of(load_config(config_file))


def test_locks_hold_until_their_time_or_an_unlock(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    now = time.time()
    write_lock(locks, Lock("alice", "lock-me", "s1", now, now + 60))
    assert read_lock(locks, "alice") is not None
    assert "locked by rule lock-me" in (refusal(locks, "alice") or "")
    assert read_lock(locks, "alice", now + 61) is None  # over
    assert read_lock(locks, "bob") is None
    assert read_lock(locks, "../alice") is None
    write_lock(locks, Lock("alice", "other", "s2", now, now + 10))  # shorter: kept
    assert read_lock(locks, "alice").rule == "lock-me"  # type: ignore[union-attr]
    assert remove_lock(locks, "alice") is not None
    assert refusal(locks, "alice") is None
    write_lock(locks, Lock("carol", "r", "s", now, None))
    (locks / "carol.lock").chmod(0o666)  # anyone could write it: not trusted
    assert read_lock(locks, "carol") is None


@pytest.mark.root
def test_an_auditor_unlocks_through_the_control_socket(tmp_path: Path) -> None:
    from agent.access_log import Action as AccessAction
    from agent.control import ControlClient
    from agent.daemon.control import Controller, ControlServer
    from agent.daemon.store import Store
    from agent.files import Sharing
    from agent.reader import load

    locks = tmp_path / "locks"
    write_lock(locks, Lock("alice", "lock-me", "s1", time.time(), None))
    store = Store(tmp_path / "data" / "store", 0.05)
    with store:
        path = tmp_path / "control.sock"
        controller = Controller(store, None, frozenset({0}), locks)
        with ControlServer(path, controller, Sharing(None)):
            client = ControlClient(path)
            reply = client.unlock("alice", "auditor1", client="10.0.0.9")
            assert reply.ok and reply.message == "alice unlocked"
            assert client.unlock("alice", "auditor1").message == "alice was not locked"
            assert not client.unlock("../etc", "auditor1").ok
        store.flush()
    assert refusal(locks, "alice") is None
    entries = load(store.store_dir.parent).access
    assert [(e.action, e.actor, e.session) for e in entries][0] == (
        AccessAction.UNLOCK,
        "auditor1",
        "s1",
    )
