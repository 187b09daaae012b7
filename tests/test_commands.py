"""Accepted lines to commands: continuation lines joined, pastes split, caps."""

from __future__ import annotations

from parsers.commands import MAX_HELD_LINES, CommandAssembler
from parsers.events import Checkpoint, CommandLine, LineKind

CP = Checkpoint(0, 0, 24, 80, True, "$ ")


def feed(assembler: CommandAssembler, text: str, prompt: str = "> ") -> list:
    return assembler.feed(CommandLine(1.0, text, prompt, CP))


def test_continuation_lines_are_one_command() -> None:
    a = CommandAssembler()
    out = feed(a, "echo one \\", "$ ") + feed(a, "two \\") + feed(a, "three")
    assert [(c.text, c.lines) for c in out] == [("echo one two three", 3)]
    out = feed(a, 'echo "a', "$ ") + feed(a, 'b"')
    assert [c.text for c in out] == ['echo "a\nb"']


def test_ctrl_c_at_a_continuation_prompt_keeps_the_entered_part_cancelled() -> None:
    a = CommandAssembler()
    assert feed(a, 'echo "open', "$ ") == []
    out = feed(a, "echo closed", "$ ")
    assert [(c.text, c.cancelled) for c in out] == [
        ('echo "open', True),
        ("echo closed", False),
    ]


def test_an_endless_open_command_is_released_in_capped_parts() -> None:
    """issue 16: `echo "` then line after line is held no further than the cap."""
    a = CommandAssembler()
    out = feed(a, 'echo "', "$ ")
    for _ in range(MAX_HELD_LINES * 2 + 10):
        out += feed(a, "x" * 70)
    assert len(out) == 2 and all(c.unterminated for c in out)
    out += feed(a, 'end"') + feed(a, "ls", "$ ")
    assert out[-1].text == "ls" and not out[-1].unterminated
    assert out[-2].unterminated and out[-2].text.endswith('end"')
    assert sum(c.lines for c in out[:-1]) == MAX_HELD_LINES * 2 + 12


def test_inputs_are_not_joined_with_shell_lines() -> None:
    a = CommandAssembler()
    line = CommandLine(1.0, "SELECT 'a", "sqlite> ", CP, LineKind.INPUT, "sqlite3")
    out = a.feed(line)
    assert [(c.text, c.kind, c.program) for c in out] == [
        ("SELECT 'a", LineKind.INPUT, "sqlite3")
    ]
