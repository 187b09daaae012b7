"""The console's reader over a real store: filters, paging, bounded search.

The store is written by the agent's own writer (agent/daemon/store.py) in a
temp dir; the reader (web/console_store.py) reads its shards as audit-web
does, with no Django in between.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from agent.daemon.store import Store
from agent.records import Command, iso
from tests.test_store import make_session
from web import console_store
from web.console_store import LocalReader, Search, SearchError, SessionFilter

COMMANDS = [
    "ls -l /srv",
    "grep -r needle /etc",
    "echo one\necho two",
    "GREP -i Needle /var",
    "rm -rf /tmp/x",
]


@pytest.fixture
def reader(tmp_path: Path) -> LocalReader:
    store = Store(tmp_path / "data" / "store", 0.05)
    store.open()
    for n, user in enumerate(("alice", "bob")):
        s = dataclasses.replace(
            make_session(f"s{n}"), bastion_user=user, started_at=1_800_000_000.0 + n
        )
        cmds = [
            Command(s.id, k + 1, iso(s.started_at + k), text)
            for k, text in enumerate(COMMANDS)
        ]
        store.submit(dataclasses.replace(s, command_count=len(cmds)), cmds)
        store.flush()
    return LocalReader(tmp_path / "data")


def texts(page: console_store.Page) -> list[tuple[str, str]]:
    return [(h.command.session, h.command.command) for h in page.items]


def test_text_search_is_case_blind_newest_first_and_limited_to_the_owner(
    reader: LocalReader,
) -> None:
    page = reader.search(Search("needle"), 0, 50)
    assert texts(page) == [
        ("s1", "GREP -i Needle /var"),
        ("s1", "grep -r needle /etc"),
        ("s0", "GREP -i Needle /var"),
        ("s0", "grep -r needle /etc"),
    ]
    assert page.total == 4 and not page.stopped
    own = reader.search(Search("needle", owner="alice"), 0, 1)
    assert texts(own) == [("s0", "GREP -i Needle /var")] and own.total == 2
    assert own.next_offset == 1


def test_regex_search_matches_each_command_as_a_whole(reader: LocalReader) -> None:
    def found(pattern: str) -> list[str]:
        page = reader.search(Search(pattern, regex=True, owner="alice"), 0, 50)
        return [c for _, c in texts(page)][::-1]

    assert found(r"^grep") == ["grep -r needle /etc"]
    assert found(r"/srv$") == ["ls -l /srv"]
    assert found(r"^echo two$") == []  # one command of two lines, not two commands
    assert found(r"one\necho") == ["echo one\necho two"]
    assert found(r"srv\ngrep") == []  # never across two commands
    assert found(r"(?<=rm )-rf") == ["rm -rf /tmp/x"]  # lookbehind: each alone
    assert found(r"\Als") == ["ls -l /srv"]
    with pytest.raises(SearchError, match="not a regular expression"):
        found("(")


def test_a_catastrophic_pattern_stops_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "data" / "store", 0.05)
    store.open()
    s = make_session("slow")
    hostile = "a" * 40 + "!"  # exponential for (a|aa)+$, even in `regex`
    cmds = [Command(s.id, k + 1, iso(s.started_at), hostile) for k in range(3)]
    store.submit(dataclasses.replace(s, command_count=3), cmds)
    store.flush()
    monkeypatch.setattr(console_store, "SEARCH_DEADLINE_S", 0.5)
    for pattern in (r"(a|aa)+$", r"(?<=a)(a|aa)+$"):  # one scan, and each alone
        started = time.monotonic()
        page = LocalReader(tmp_path / "data").search(Search(pattern, regex=True), 0, 9)
        assert time.monotonic() - started < 10.0  # ends, even on a loaded machine
        assert page.stopped and page.total == 0


def test_session_filters_and_text_in_any_command(reader: LocalReader) -> None:
    everyone = reader.session_page(SessionFilter(), 0, 50)
    assert [s.id for s in everyone.items] == ["s1", "s0"]  # the newest first
    assert [
        s.id for s in reader.session_page(SessionFilter(owner="bob"), 0, 50).items
    ] == ["s1"]
    having = reader.session_page(SessionFilter(text="RM -RF"), 0, 50)
    assert having.total == 2
    assert reader.session_page(SessionFilter(text="absent"), 0, 50).total == 0
    s0 = reader.session("s0")
    assert s0 is not None and reader.session("s0", "b1") is None  # no bastion here
    assert [c.seq for c in reader.session_commands(s0)] == [1, 2, 3, 4, 5]
    assert [c.seq for c in reader.session_commands(s0, after=3)] == [4, 5]


def test_the_console_reads_through_the_shared_reader_interface(
    reader: LocalReader,
) -> None:
    from agent.reading import Reader, Selection

    assert isinstance(reader, Reader) and not reader.fleet
    assert [s.id for s in reader.sessions(Selection())] == ["s0", "s1"]
    rows = list(reader.commands(Selection(contains="NEEDLE", session="s0")))
    assert [c.command for c, _ in rows] == [
        "grep -r needle /etc",
        "GREP -i Needle /var",
    ]
    assert all(s is not None and s.id == "s0" for _, s in rows)
    # What the console's fleet backend asks of it too: the newest first, counts.
    newest = reader.sessions(Selection(), limit=1, newest_first=True)
    assert [s.id for s in newest] == ["s1"]
    assert reader.count_sessions(Selection(having="rm -RF", bastion_user="bob")) == 1
    assert reader.count_commands(Selection(contains="needle")) == 4
    assert reader.count_commands(Selection(contains="needle"), at_most=3) == 3
    last = next(reader.commands(Selection(contains="needle"), newest_first=True))
    assert (last[0].session, last[0].command) == ("s1", "GREP -i Needle /var")
