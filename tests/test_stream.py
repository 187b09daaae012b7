"""FastByteStream makes the same calls on its screen as pyte's ByteStream, in order."""

from __future__ import annotations

import random
from typing import Any

import pyte

from parsers.screen import LineScreen
from parsers.stream import FastByteStream

PIECES = (
    b"ls -la /srv",
    b"\r",
    b"\n",
    b"\r\n",
    b"\b",
    b"\x07",
    b"\t",
    b"\x0b\x0c",
    b"\x0e",  # SO and SI: pyte ignores them in UTF-8 mode, not after ESC % @
    b"\x0f",
    b"\x00\x7f",
    b"\x1b[?2004h",
    b"\x1b[?2004l",
    b"\x1b[?1049h",
    b"\x1b[?1;2004h",
    b"\x1b[?;2004;h",
    b"\x1b[?25l",
    b"\x1b[?7l",
    b"\x1b[01;32m",
    b"\x1b[00m",
    b"\x1b[m",
    b"\x1b[;m",
    b"\x1b[38;5;200m",
    b"\x1b[99999999m",  # past 9999
    b"\x1b[5;10H",
    b"\x1b[K",
    b"\x1b[2J",
    b"\x1b[3@",
    b"\x1b[4h",
    b"\x1b[4l",
    b"\x1b[0c",
    b"\x1b[[",  # a final pyte knows nothing of: its debug
    b"\x1b[1:2m",  # ":" ends the sequence, for pyte
    b"\x1b[1\r2H",  # a CR inside a CSI is carried out there
    b"\x1b[1 q",
    b"\x1b[>0c",
    b"\x1b[1$p",
    b"\x1b[1\x18m",  # CAN aborts it
    b"\x1b[1?h",
    b"\x1b[??1h",
    b"\x1b[",  # cut: the rest comes in the next piece
    b"\x1b",
    b"\x1b[12",
    b"\x1b]0;title\x07",
    b"\x1b]2;t",
    b"\x1b\\",
    b"\xc2\x9b1m",  # C1 CSI
    b"\xc2\x9d0;x\x07",  # C1 OSC
    b"\x1b7",
    b"\x1b8",
    b"\x1bD",
    b"\x1bM",
    b"\x1b#8",
    b"\x1b(0lqk\x1b(B",
    b"\x1b%@",  # out of UTF-8
    b"\x1b%G",  # back
    "héllo 中文".encode(),
    "中".encode()[:2],  # a character cut in two
    "中".encode()[2:],
    b"\xff\xfe",
    b" $ ",
)


class Calls:
    """What a stream asked of its screen, in order."""

    def __init__(self) -> None:
        self.made: list[tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...]]] = []


def recording(base: type[pyte.Screen], calls: Calls) -> type[pyte.Screen]:
    def wrap(name: str) -> Any:
        method = getattr(base, name)

        def call(self: pyte.Screen, *args: Any, **kwargs: Any) -> Any:
            calls.made.append((name, args, tuple(sorted(kwargs.items()))))
            return method(self, *args, **kwargs)

        return call

    names = {name for name in pyte.Stream.events if hasattr(base, name)}
    return type("Recording" + base.__name__, (base,), {n: wrap(n) for n in names})


def cells(screen: pyte.Screen) -> list[list[tuple[object, ...]]]:
    return [
        [tuple(screen.buffer[y][x]) for x in range(screen.columns)]
        for y in range(screen.lines)
    ]


def test_the_screen_sees_what_pytes_stream_would_show_it() -> None:
    rng = random.Random(20261201)
    for base in (pyte.Screen, LineScreen):
        for _ in range(400):
            ours_calls, theirs_calls = Calls(), Calls()
            ours = recording(base, ours_calls)(30, 6)
            theirs = recording(base, theirs_calls)(30, 6)
            ours_stream, their_stream = FastByteStream(ours), pyte.ByteStream(theirs)
            data = b"".join(rng.choice(PIECES) for _ in range(30))
            at = 0
            while at < len(data):  # split anywhere, as ssh's writes are
                step = rng.randint(1, 12)
                piece = data[at : at + step]
                at += step
                for stream in (ours_stream, their_stream):
                    try:
                        stream.feed(piece)
                    except TypeError:
                        pass  # pyte's handlers refuse some `private`: both must
                assert ours_calls.made == theirs_calls.made, repr(data)
                assert ours_stream._taking_plain_text == their_stream._taking_plain_text
            assert cells(ours) == cells(theirs)
            assert (ours.cursor.x, ours.cursor.y, ours.mode, ours.title) == (
                theirs.cursor.x,
                theirs.cursor.y,
                theirs.mode,
                theirs.title,
            )


def test_it_takes_fewer_steps_than_pytes_generator() -> None:
    """What it is for: a prompt's sequences never reach the generator."""
    prompt = b"\x1b[?2004h\x1b[01;32mu@h\x1b[00m:\x1b[01;34m~\x1b[00m$ echo hi\r\n"
    sent: list[str] = []
    stream = FastByteStream(pyte.Screen(80, 24))
    send = stream._send_to_parser
    stream._send_to_parser = lambda c: sent.append(c) or send(c)  # type: ignore[method-assign]
    stream.feed(prompt * 10)
    assert sent == []
