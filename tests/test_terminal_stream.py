"""parsers/terminal_stream.py draws what pyte's own stream draws, byte for byte.

The same bytes, cut into the same chunks, go to a LineScreen through
pyte.ByteStream and to another through TerminalStream; after every chunk
the two screens (every cell with its attributes, the cursor, the modes,
the wrap and scroll bookkeeping) and any error raised must be the same.
"""

from __future__ import annotations

import random
from typing import Any

import pyte
import pytest

from parsers.screen import LineScreen
from parsers.terminal_stream import TerminalStream

# What prompts, line editors and commands write, and what they should not.
PIECES = [
    b"user@host:~$ ",
    b"ls -la",
    b"\xc3\xa9t\xc3\xa9",
    b"\xe4\xb8\xad\xe6\x96\x87",
    b"\xf0\x9f\x98\x80",
    b"x" * 30,
    b"\xe2\x80\x8b",
    b"\xff",
    b"\xc3",
    b"\r",
    b"\n",
    b"\r\n",
    b"\b",
    b"\t",
    b"\x07",
    b"\x0b",
    b"\x0c",
    b"\x0e",
    b"\x0f",
    b"\x00",
    b"\x7f",
    b"\x18",
    b"\x1a",
    b"\x1b[m",
    b"\x1b[0m",
    b"\x1b[01;32m",
    b"\x1b[0;1;;4m",
    b"\x1b[38;5;196m",
    b"\x1b[48;2;1;2;3m",
    b"\x1b[7m",
    b"\x1b[27m",
    b"\x1b[3D",
    b"\x1b[C",
    b"\x1b[2A",
    b"\x1b[B",
    b"\x1b[K",
    b"\x1b[1K",
    b"\x1b[2K",
    b"\x1b[H",
    b"\x1b[5;10H",
    b"\x1b[3;4f",
    b"\x1b[J",
    b"\x1b[1J",
    b"\x1b[2J",
    b"\x1b[P",
    b"\x1b[4P",
    b"\x1b[@",
    b"\x1b[2@",
    b"\x1b[3X",
    b"\x1b[L",
    b"\x1b[2M",
    b"\x1b[4h",
    b"\x1b[4l",
    b"\x1b[20h",
    b"\x1b[2;4r",
    b"\x1b[r",
    b"\x1b[G",
    b"\x1b[12G",
    b"\x1b[3d",
    b"\x1b[2e",
    b"\x1b[E",
    b"\x1b[F",
    b"\x1b[g",
    b"\x1b[3g",
    b"\x1b[c",
    b"\x1b[6n",
    b"\x1b[99999999C",
    b"\x1b[;H",
    b"\x1b[;;m",
    b"\x1b[1;m",
    b"\x1b[?2004h",
    b"\x1b[?2004l",
    b"\x1b[?1049h",
    b"\x1b[?1049l",
    b"\x1b[?25l",
    b"\x1b[?25h",
    b"\x1b[?7l",
    b"\x1b[?7h",
    b"\x1b[?6h",
    b"\x1b[?6l",
    b"\x1b[?1;2h",
    b"\x1b[?4m",
    b"\x1b[?2J",
    b"\x1b[?K",
    b"\x1b[1?h",
    b"\x1b[1\r2C",
    b"\x1b[2\n",
    b"\x1b[1\x18",
    b"\x1b[5\x1a",
    b"\x1b[1$p",
    b"\x1b[>c",
    b"\x1b[ q",
    b"\x1b[1:2m",
    b"\x1b[<1m",
    b"\x1b(B",
    b"\x1b(0",
    b"\x1b)0",
    b"\x1b(\n",
    b"\x1b%G",
    b"\x1b%@",
    b"\x1b#8",
    b"\x1b7",
    b"\x1b8",
    b"\x1bM",
    b"\x1bD",
    b"\x1bE",
    b"\x1bH",
    b"\x1bc",
    b"\x1b=",
    b"\x1b>",
    b"\x1b",
    b"\x1b[",
    b"\x1b[1;",
    b"\x1b]0;title\x07",
    b"\x1b]2;t\x1b\\",
    b"\x1b]R",
    b"\xc2\x9b1m",
    b"\xc2\x9d0;t\x07",
    b"\x1b\x1b[m",
]
PROMPT = (
    b"\x1b[?2004h\x1b]0;u@h: ~\x07\x1b[01;32mu@h\x1b[00m:\x1b[01;34m~\x1b[00m$ "
    b"echo hello\x08\x08\x08\x1b[1@X\x1b[C\r\n\x1b[?2004l\rhello\r\n"
)


def snapshot(screen: LineScreen) -> dict[str, Any]:
    return {
        "cells": {y: dict(line) for y, line in screen.buffer.items() if line},
        "cursor": (screen.cursor.x, screen.cursor.y, screen.cursor.attrs),
        "hidden": screen.cursor.hidden,
        "mode": set(screen.mode),
        "margins": screen.margins,
        "charset": (screen.charset, screen.g0_charset, screen.g1_charset),
        "saved": [
            (p.cursor.x, p.cursor.y, p.cursor.attrs, p._replace(cursor=None))
            for p in screen.savepoints
        ],
        "tabstops": set(screen.tabstops),
        "title": (screen.title, screen.icon_name),
        "wrapped": set(screen.wrapped),
        "scrolled": screen.scrolled,
        "linefeeds": (screen.linefeeds, screen.last_linefeed_row),
        "kept": dict(screen.kept),
    }


class Pair:
    """The same screen twice: one fed by pyte's stream, one by ours."""

    def __init__(self, columns: int, lines: int) -> None:
        self.screens = (LineScreen(columns, lines), LineScreen(columns, lines))
        for screen in self.screens:
            screen.keep_scrolled = True
        self.streams = (
            pyte.ByteStream(self.screens[0]),
            TerminalStream(self.screens[1]),
        )

    def feed(self, chunk: bytes) -> None:
        errors = []
        for stream in self.streams:
            try:
                stream.feed(chunk)
            except Exception as e:  # pyte raises on some private sequences
                errors.append(type(e))
            else:
                errors.append(None)
        assert errors[0] == errors[1], chunk
        assert snapshot(self.screens[0]) == snapshot(self.screens[1]), chunk


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(
        rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6)))
    )
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(300))
def test_random_streams_draw_the_same_screens(seed: int) -> None:
    rng = random.Random(seed)
    pair = Pair(rng.choice((5, 12, 80)), rng.choice((3, 6, 24)))
    data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 80)))
    for chunk in chunks(data, rng):
        pair.feed(chunk)


def test_a_prompt_cut_at_every_place_draws_the_same_screen() -> None:
    for cut in range(1, len(PROMPT)):
        pair = Pair(20, 4)
        pair.feed(PROMPT[:cut])
        pair.feed(PROMPT[cut:])
        pair.feed(PROMPT)


def test_every_piece_alone_and_after_each_other_piece() -> None:
    for first in PIECES:
        pair = Pair(12, 4)
        pair.feed(first)
        for second in PIECES:
            pair.feed(second)
