"""The menu's keys and state, from the byte strings a terminal sends."""

from __future__ import annotations

from agent.inventory import Account, Host, Target
from agent.shell.menu import (
    BACKSPACE,
    DOWN,
    END,
    ENTER,
    FILTER_MAX_CHARS,
    INTERRUPT,
    LEAVE,
    PAGE_DOWN,
    UP,
    KeyDecoder,
    MenuState,
    View,
    render,
)


def keys(*chunks: bytes) -> list[str]:
    decoder = KeyDecoder()
    out: list[str] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def test_plain_and_control_keys() -> None:
    assert keys(b"db1\r") == ["d", "b", "1", ENTER]
    assert keys(b"\x03\x1a\x1c\x04\x7f") == [
        INTERRUPT,
        INTERRUPT,
        INTERRUPT,
        LEAVE,
        BACKSPACE,
    ]
    assert keys("é✓".encode()) == ["é", "✓"]


def test_escape_sequences_even_split_across_reads() -> None:
    assert keys(b"\x1b[A\x1bOB\x1b[6~\x1b[F") == [UP, DOWN, PAGE_DOWN, END]
    assert keys(b"\x1b", b"[", b"A") == [UP]
    # Unknown sequences, OSC titles, bracketed paste markers, Alt+x: nothing.
    assert keys(b"\x1b[15;2~\x1b[999999H\x1bx\x1b[200~") == []
    assert keys(b"\x1b]0;title\x07") == ["0", ";", "t", "i", "t", "l", "e"]
    # ESC then Enter: Enter still counts.
    assert keys(b"\x1b\r") == [ENTER]
    # An endless sequence is dropped, and the decoder recovers.
    assert keys(b"\x1b[" + b"1" * 10_000 + b"x") == []
    assert keys(b"\x1b[" + b"1" * 10_000, b"\x1b[Aq") == [UP, "q"]


def test_bytes_that_are_not_utf8_are_dropped() -> None:
    assert keys(b"a\xffb\xc3(\xed\xa0\x80c") == ["a", "b", "(", "c"]
    assert keys(b"\xe2\x9c", b"\x93") == ["✓"]  # split across reads


def targets() -> tuple[Target, ...]:
    db = Host("db1", "10.0.0.5", 22, "databases", (Account("postgres", None, "p"),))
    web = [
        Host(f"web{n}", f"10.0.1.{n}", 22, "web", (Account("deploy", None, "p"),))
        for n in range(1, 13)
    ]
    return tuple(Target(h, h.accounts[0]) for h in [db, *web])


def type_(state: MenuState, text: str) -> MenuState:
    for char in text:
        state = state.key(char)
    return state


def test_filter_numbers_and_selection() -> None:
    state = MenuState(targets())
    assert len(state.visible()) == 13
    assert state.chosen().label == "postgres@db1"
    web = type_(state, "WEB1")
    assert [t.host.name for _, t in web.visible()] == [
        "web1",
        "web10",
        "web11",
        "web12",
    ]
    assert web.key(DOWN).key(DOWN).chosen().host.name == "web11"
    assert web.key(DOWN).key(UP).key(UP).chosen().host.name == "web1"
    assert web.key(END).chosen().host.name == "web12"
    # A number picks that line, whatever is highlighted.
    assert type_(state, "12").chosen().host.name == "web11"
    assert type_(state, "nothing").chosen() is None
    assert type_(state, "ab").key(BACKSPACE).filter == "a"
    assert type_(state, "ab").key(INTERRUPT).filter == ""
    assert len(type_(state, "x" * 10_000).filter) == FILTER_MAX_CHARS


def test_render_shows_groups_and_never_reads_markup() -> None:
    state = MenuState(targets())
    text = render(state, View("bastion", "[bold]alice", "hello", rows=10, cols=60))
    assert text.startswith("\x1b[H") and text.endswith("\x1b[J")
    assert "databases" in text and "postgres@db1" in text
    assert "[bold]alice" in text
    assert "web12" not in text  # 10 rows: the list scrolls
    scrolled = render(state.key(END), View("bastion", "alice", rows=10, cols=60))
    assert "web12" in scrolled
