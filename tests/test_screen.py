"""LineScreen's own drawing of printable ASCII is pyte's, cell for cell."""

from __future__ import annotations

import random

import pyte

from parsers.screen import MAX_SHARED_CHARS, LineScreen

PIECES = (
    "ls -la /srv",
    "x" * 37,  # runs that cross the right margin
    "\r",
    "\n",
    "\b",
    "\x7f",  # DEL: pyte draws nothing from it on
    "\t",
    "\x1b[1;31m",
    "\x1b[0m",
    "\x1b[38;5;200m",
    "\x1b[48;2;10;20;30m",
    "\x1b[7m",
    "\x1b[4h",  # insert mode: pyte's own path
    "\x1b[4l",
    "\x1b[?7l",  # no auto-wrap
    "\x1b[?7h",
    "\x1b(0lqqk\x1b(B",  # the line-drawing charset: not ASCII once translated
    "\x1b[5;10H",
    "\x1b[2K",
    "\x1b[3D",
    "\x1b[2@",
    "héllo",
    " $ ",
    "\x1bc",  # a reset: the shared cells outlive it
)


def cells(screen: pyte.Screen) -> list[list[tuple[object, ...]]]:
    return [
        [tuple(screen.buffer[y][x]) for x in range(screen.columns)]
        for y in range(screen.lines)
    ]


def test_drawing_matches_pyte_cell_for_cell() -> None:
    rng = random.Random(20261201)
    for _ in range(300):
        ours, theirs = LineScreen(30, 6), pyte.Screen(30, 6)
        ours_stream, their_stream = pyte.Stream(ours), pyte.Stream(theirs)
        for _ in range(40):
            piece = rng.choice(PIECES)
            ours_stream.feed(piece)
            their_stream.feed(piece)
            assert (ours.cursor.x, ours.cursor.y) == (
                theirs.cursor.x,
                theirs.cursor.y,
            ), repr(piece)
        assert cells(ours) == cells(theirs)


def test_the_shared_cells_stay_bounded() -> None:
    screen = LineScreen(80, 24)
    stream = pyte.Stream(screen)
    for n in range(3 * MAX_SHARED_CHARS):  # a new colour for every character
        stream.feed(f"\x1b[38;2;{n % 256};{n // 256 % 256};7mab")
    assert len(screen._shared) <= MAX_SHARED_CHARS + 2
