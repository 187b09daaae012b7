"""Strace text to timed terminal events.

The log of one session is what `scripts/session_tracker.sh` writes: lifecycle
lines of our own (`#bastion-audit {json}`) and the output of
`strace -ttt -y -s 1048576 -e trace=read,write,ioctl -P TTY -p PID`.
Everything here is pure: bytes in, records out, no files or clocks.

Facts about that output this module depends on (strace 6.1, Debian 12):
- `-y` annotates every fd with what it points to: `read(4</dev/pts/3>, ...)`.
  ssh dup()s stdin and stdout, so the fd numbers differ between versions; the
  terminal is recognised by its path, never by number.
- Without `-x`, strings escape `\\t \\n \\v \\f \\r \\" \\\\` and print every
  other byte outside 0x20..0x7e as octal (`\\33`, `\\342`); with `-x` a string
  holding any such byte is printed wholly as `\\xNN`. Both are C escapes, so
  `codecs.escape_decode` reads them at C speed.
- `write()` shows the whole buffer it was given; only the first `result`
  bytes reached the terminal (a short write is retried with the rest).
- A syscall interrupted by another traced process's line prints
  `name(args <unfinished ...>` and later `<... name resumed>rest`.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from parsers.events import Chunk, Direction, Event, Marker, MarkerKind, Resize

MARKER_PREFIX = b"#bastion-audit "

# Optional pid column (`-f`), then the `-ttt` timestamp.
_PREFIX_RE = re.compile(rb"(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(\d+\.\d+)\s+")
# `-y` marks a terminal that was hung up as `0</dev/pts/3>(deleted)`.
_CALL_HEAD_RE = re.compile(rb"(\w+)\((-?\d+)(?:<([^>]*)>(?:\(deleted\))?)?,\s*")
_RESUMED_RE = re.compile(rb"<\.\.\. (\w+) resumed>\s*")
_UNFINISHED = b" <unfinished ...>"
_EXIT_RE = re.compile(rb"\+\+\+ (exited with (-?\d+)|killed by (\w+)[^+]*) \+\+\+")
_WINSZ_RE = re.compile(rb"ws_row=(\d+), ws_col=(\d+)")
_MARKER_KINDS = frozenset(MarkerKind)
_TTY_PATH_RE = re.compile(r"/dev/(pts/\d+|tty\w+)")  # not /dev/tty itself


@dataclass
class DecoderStats:
    """What the decoder passed over; junk is counted, never raised."""

    lines: int = 0
    events: int = 0
    junk: int = 0
    truncated: int = 0
    tracer_notes: int = 0
    last_junk: bytes = b""


@dataclass
class StraceDecoder:
    """Turns a growing strace log into events, one complete line at a time.

    `tty` is the session's terminal; when unknown, any /dev/pts/N or /dev/ttyX
    fd counts (never /dev/tty itself, which is where ssh reads a password).
    """

    tty: str | None = None
    offset: int = 0  # log offset of the first byte not yet fed
    stats: DecoderStats = field(default_factory=DecoderStats)
    _partial: bytes = b""
    _unfinished: dict[int | None, bytes] = field(default_factory=dict)

    def feed(self, data: bytes) -> list[Event]:
        """Decode every complete line in `data`; keep a half-written last line."""
        buf = self._partial + data
        start_offset = self.offset - len(self._partial)
        self.offset += len(data)
        lines = buf.split(b"\n")
        self._partial = lines.pop()
        events: list[Event] = []
        pos = start_offset
        for line in lines:
            events.extend(self.decode_line(line, pos))
            pos += len(line) + 1
        return events

    def finish(self) -> list[Event]:
        """Decode a last line that never got its newline (the tracer is gone)."""
        line, self._partial = self._partial, b""
        return list(self.decode_line(line, self.offset - len(line))) if line else []

    @property
    def pending_bytes(self) -> int:
        return len(self._partial)

    def decode_line(self, line: bytes, offset: int) -> Iterator[Event]:
        self.stats.lines += 1
        if line.startswith(MARKER_PREFIX):
            events = marker_events(line, offset)
            if events is None:
                self._junk(line)
                return
            self.stats.events += 1
            yield from events
            return
        if line.startswith(b"strace: "):
            self.stats.tracer_notes += 1  # attach/detach notes, ptrace errors
            return
        m = _PREFIX_RE.match(line)
        if m is None:
            if line.strip():
                self._junk(line)
            return
        pid_text = m.group(1) or m.group(2)
        pid = int(pid_text) if pid_text else None
        time = float(m.group(3))
        rest = line[m.end() :]
        if rest.endswith(_UNFINISHED):
            self._unfinished[pid] = rest[: -len(_UNFINISHED)]
            return
        resumed = _RESUMED_RE.match(rest)
        if resumed is not None:
            head = self._unfinished.pop(pid, None)
            if head is None or not head.startswith(resumed.group(1) + b"("):
                self._junk(line)
                return
            # Timed when it completed: a read's data exists only then.
            rest = head + rest[resumed.end() :]
        if rest.startswith(b"+++"):
            exit_m = _EXIT_RE.match(rest)
            if exit_m is None:
                self._junk(line)
                return
            reason = exit_m.group(1).decode("ascii", "replace")
            self.stats.events += 1
            yield Marker(time, MarkerKind.END, {"reason": f"ssh {reason}"}, offset)
            return
        if rest.startswith(b"---"):
            return  # a signal delivered to ssh; SIGWINCH is followed by TIOCGWINSZ
        try:
            event = self._decode_call(time, rest, offset)
        except (ValueError, IndexError):
            self._junk(line)
            return
        if event is not None:
            self.stats.events += 1
            yield event

    def _decode_call(self, time: float, rest: bytes, offset: int) -> Event | None:
        head = _CALL_HEAD_RE.match(rest)
        if head is None:
            if rest.startswith((b"read(", b"write(", b"ioctl(")):
                raise ValueError("no fd")
            return None  # a syscall we did not ask for: nothing to learn
        name, path = head.group(1), head.group(3)
        if path is None or not self._is_terminal(path.decode("utf-8", "replace")):
            return None
        end = rest.rfind(b") = ")
        if end < 0:
            raise ValueError("no result")
        result_text = rest[end + 4 :].split(b" ", 1)[0]
        if not result_text.lstrip(b"-").isdigit():
            return None  # `= ?`: ssh died inside the call
        result = int(result_text)
        args = rest[head.end() : end]
        if name == b"ioctl":
            winsz = _WINSZ_RE.search(args)
            if winsz is None or result != 0 or b"TIOCGWINSZ" not in args:
                return None
            return Resize(time, int(winsz.group(1)), int(winsz.group(2)), offset)
        if name not in (b"read", b"write") or result <= 0:
            return None
        comma = args.rfind(b", ")
        quoted = args[:comma]
        if not quoted.startswith(b'"'):
            return None
        close = quoted.rfind(b'"')
        if close == 0:
            raise ValueError("unterminated string")
        if quoted.endswith(b"..."):
            self.stats.truncated += 1  # -s was too small; what is left is still real
        data = codecs.escape_decode(quoted[1:close])[0]
        if name == b"write":
            data = data[:result]
        if not data:
            return None
        direction = Direction.INPUT if name == b"read" else Direction.OUTPUT
        return Chunk(time, direction, data, offset)

    def _is_terminal(self, path: str) -> bool:
        if self.tty is not None:
            return path == self.tty
        return _TTY_PATH_RE.fullmatch(path) is not None

    def _junk(self, line: bytes) -> None:
        self.stats.junk += 1
        self.stats.last_junk = line[:200]


def marker_events(line: bytes, offset: int) -> list[Event] | None:
    """A lifecycle line as events (None: not a valid one).

    An attach line carries the terminal's size when the tracer attached: ssh
    may have asked for it before anyone was watching.
    """
    marker = parse_marker(line, offset)
    if marker is None:
        return None
    rows, cols = marker.fields.get("rows"), marker.fields.get("cols")
    if type(rows) is int and type(cols) is int and rows > 0 and cols > 0:
        return [marker, Resize(marker.time, rows, cols, offset)]
    return [marker]


def parse_marker(line: bytes, offset: int = 0) -> Marker | None:
    """Read one `#bastion-audit {json}` lifecycle line, or None if malformed."""
    try:
        fields = json.loads(line[len(MARKER_PREFIX) :])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(fields, dict):
        return None
    event = fields.get("event")
    if not isinstance(event, str) or event not in _MARKER_KINDS:
        return None
    kind = MarkerKind(event)
    time = fields.get("time")
    if not isinstance(time, (int, float)) or isinstance(time, bool):
        return None
    return Marker(float(time), kind, fields, offset)


def decode_log(data: bytes, tty: str | None = None) -> list[Event]:
    """Decode a whole log at once (tests, benchmarks, replays)."""
    decoder = StraceDecoder(tty=tty)
    return decoder.feed(data) + decoder.finish()
