"""audit-replay: play a session's recording in this terminal.

The recording is this bastion's, or the fleet store's (`--database`, or a
[fleet] table in the configuration, as for audit-export --cast). Output is
written with its timing (`--speed`; pauses longer than the idle
limit are shortened); markers and resizes are not output. Control strings
that draw nothing (OSC, DCS, APC, PM, SOS: window titles, clipboard writes,
hyperlinks) are dropped: a recording is what a remote host printed, and it
must not drive the auditor's terminal beyond drawing on it. Ctrl-C stops with
status 0, and the terminal's modes are put back at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from agent.casts import IDLE_TIME_LIMIT_S, CastError
from agent.config import add_data_dir_options
from agent.exits import ExitStatus, run_main
from agent.tools.options import add_store_options, open_reading
from agent.version import add_version_option

PROG = "audit-replay"
# Leave the alternate screen, show the cursor, reset attributes, bracketed
# paste and application cursor keys off: whatever state the recording left.
RESTORE = "\x1b[0m\x1b[?25h\x1b[?2004l\x1b[?1l\x1b>"
LEAVE_ALT_SCREEN = "\x1b[?1049l"
_STRING_STARTS = "]P_^X"  # ESC ] OSC, ESC P DCS, ESC _ APC, ESC ^ PM, ESC X SOS
_C1_STRING_STARTS = "\x9d\x90\x9f\x9e\x98"
_ALT_ON = ("\x1b[?1049h", "\x1b[?1047h", "\x1b[?47h")
_ALT_OFF = ("\x1b[?1049l", "\x1b[?1047l", "\x1b[?47l")


@dataclass(frozen=True, slots=True)
class CastEvent:
    time: float
    code: str
    data: str


@dataclass(frozen=True, slots=True)
class Cast:
    width: int
    height: int
    idle_time_limit: float | None
    events: tuple[CastEvent, ...]


def parse_cast(data: bytes, name: str) -> Cast:
    """An asciicast v2 file; CastError names what is wrong with it."""
    lines = data.decode("utf-8", "replace").splitlines()
    try:
        header = json.loads(lines[0])
        if header.get("version") != 2:
            raise ValueError(f"version {header.get('version')!r}, not 2")
        events = []
        for line in lines[1:]:
            if not line.strip():
                continue
            t, code, text = json.loads(line)
            events.append(CastEvent(float(t), str(code), str(text)))
        limit = header.get("idle_time_limit")
        return Cast(
            int(header["width"]),
            int(header["height"]),
            float(limit) if limit is not None else None,
            tuple(events),
        )
    except (IndexError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CastError(f"recording {name} is not asciicast v2: {e}") from e


class ControlStringFilter:
    """Drops OSC/DCS/APC/PM/SOS strings, even when split across events."""

    NORMAL, ESC, STRING, STRING_ESC = range(4)

    def __init__(self) -> None:
        self.state = self.NORMAL

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if self.state == self.NORMAL:
                if ch == "\x1b":
                    self.state = self.ESC
                elif ch in _C1_STRING_STARTS:
                    self.state = self.STRING
                else:
                    out.append(ch)
            elif self.state == self.STRING:
                if ch in "\x07\x9c":  # BEL or ST ends the string
                    self.state = self.NORMAL
                elif ch == "\x1b":
                    self.state = self.STRING_ESC
            elif self.state == self.STRING_ESC and ch == "\\":
                self.state = self.NORMAL  # ESC \ (ST) ends the string
            else:  # after ESC (an ESC in a string ends it and starts anew)
                self._after_esc(ch, out)
        return "".join(out)

    def _after_esc(self, ch: str, out: list[str]) -> None:
        if ch in _STRING_STARTS:
            self.state = self.STRING
        elif ch == "\x1b":
            out.append("\x1b")  # the first of two ESCs stands alone
            self.state = self.ESC
        else:
            out.append("\x1b" + ch)
            self.state = self.NORMAL


def alt_screen_after(text: str, alt: bool) -> bool:
    """Whether the alternate screen is on after `text`, given it was `alt` before."""
    on = max(text.rfind(s) for s in _ALT_ON)
    off = max(text.rfind(s) for s in _ALT_OFF)
    if on < 0 and off < 0:
        return alt
    return on > off


def timed(
    events: tuple[CastEvent, ...], speed: float, idle_limit: float | None
) -> Iterator[tuple[float, str]]:
    """(seconds to wait, text) for each output event."""
    last = 0.0
    for event in events:
        if event.code != "o":
            continue
        delay = max(0.0, event.time - last)
        last = event.time
        if idle_limit is not None:
            delay = min(delay, idle_limit)
        yield delay / speed, event.data


def play(cast: Cast, speed: float, idle_limit: float | None, out: IO[bytes]) -> None:
    control = ControlStringFilter()
    alt = False
    try:
        for delay, text in timed(cast.events, speed, idle_limit):
            if delay > 0:
                time.sleep(delay)
            shown = control.feed(text)
            alt = alt_screen_after(shown, alt)
            out.write(shown.encode("utf-8", "replace"))
            out.flush()
    finally:
        out.write(((LEAVE_ALT_SCREEN if alt else "") + RESTORE + "\r\n").encode())
        out.flush()


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Play a session's recording in this terminal."
    )
    add_version_option(parser)
    parser.add_argument("session", metavar="TAG", help="session id or tag")
    add_data_dir_options(parser)
    add_store_options(parser)
    parser.add_argument(
        "-s", "--speed", type=positive, default=1.0, metavar="N", help="N times faster"
    )
    parser.add_argument(
        "-i",
        "--idle-limit",
        type=positive,
        metavar="S",
        help="shorten pauses to S seconds (default: the recording's, "
        f"{IDLE_TIME_LIMIT_S:g} s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        _, reader = open_reading(args)
        with reader:
            cast = parse_cast(reader.cast(args.session, args.bastion), args.session)
        columns, rows = shutil.get_terminal_size((0, 0))
        if (
            sys.stdout.isatty()
            and columns
            and (cast.width > columns or cast.height > rows)
        ):
            print(
                f"{PROG}: note: recorded at {cast.width}x{cast.height}, this terminal "
                f"is {columns}x{rows}: lines may wrap",
                file=sys.stderr,
            )
        limit = args.idle_limit or cast.idle_time_limit
        play(cast, args.speed, limit, _stdout_bytes())
        return ExitStatus.SUCCESS

    return run_main(PROG, body, ctrl_c_status=ExitStatus.SUCCESS)


def _stdout_bytes() -> Any:
    sys.stdout.flush()
    return os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)


if __name__ == "__main__":
    sys.exit(main())
