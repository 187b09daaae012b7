"""ZMODEM in a terminal session: the files it moved, its bytes kept off the screen.

`sz FILE` on the host (a download) or `rz` there (an upload, with the
person's terminal program sending: Xshell, SecureCRT, `sz` behind the
terminal) run the ZMODEM protocol over the session's terminal. Its frames
are binary; fed to the terminal emulator they would be noise on the screen,
in the recording and in the line the parser reads. This stage sits between
the decoder and everything else: it passes events through unchanged until
the host's output shows a session starting (ZRQINIT `**^XB00` from sz, or
ZRINIT `**^XB01` from rz), then takes the host's output of that session out
of the stream and reads both directions' frames, and when it ends puts one
`Transfer` per file in its place (name, size, SHA-256 of the data in order,
outcome).

Only the host's output is ever taken out. The person's keys always go on
as they came (for a download they are the terminal's acknowledgements, for
an upload the file itself: the shell is not reading then, so they become no
command, and count as keys no line used). And the host's output leaves the
stream only inside frames whose CRC is right: printable text outside frames,
or readline's bracketed-paste marker (a shell reading a line), ends the
session at once and passes through, so printing a ZMODEM header cannot
switch the parser off.

The framing, as lrzsz speaks it (captured: sz | rz through two pipes):
    ZPAD ZPAD ZDLE 'B' <14 hex digits> CR LF|0x80 [XON]   a hex header
    ZPAD ZDLE 'A' <5 bytes, CRC-16> / 'C' <5 bytes, CRC-32> binary headers
    after ZFILE, ZDATA, ZSINIT, ZCOMMAND: data subpackets, ZDLE-escaped,
    each ended by ZDLE + ZCRCE/ZCRCG/ZCRCQ/ZCRCW and its CRC
    ZFIN both ways ends it, and the sender's "OO"; five CANs cancel it.
Pure: events in, events out; work linear in the bytes.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from parsers.events import (
    Chunk,
    Direction,
    Event,
    Transfer,
    TransferDirection,
    TransferOutcome,
)

ZPAD, ZDLE = 0x2A, 0x18
ZCRCE, ZCRCG, ZCRCQ, ZCRCW = 0x68, 0x69, 0x6A, 0x6B
FRAME_ENDS = frozenset({ZCRCE, ZCRCG, ZCRCQ, ZCRCW})
FLOW_CONTROL = frozenset({0x11, 0x13, 0x91, 0x93})  # XON/XOFF, raw: ignored
STARTS = {
    b"**\x18B00": TransferDirection.DOWNLOAD,
    b"**\x18B01": TransferDirection.UPLOAD,
}
TEXT_ALLOWANCE = 32  # printable bytes outside frames before it is no session
MAX_INFO_BYTES = 4096  # a ZFILE's name and sizes; more is not a real one
MARKER = b"\x1b[?2004"
_FRAME_END_RE = re.compile(rb"\x18[hijk]")
_FLOW_BYTES = bytes(FLOW_CONTROL)
_UNESCAPED = {0x6C: 0x7F, 0x6D: 0xFF}  # ZRUB0, ZRUB1


def _unescape_run(run: bytes) -> bytes:
    """Escaped data without a frame end: flow control dropped, ZDLE undone."""
    if b"\x18" * 5 in run:
        raise Garbage("cancelled (five CANs)")
    parts = run.translate(None, _FLOW_BYTES).split(b"\x18")
    out = [parts[0]]
    for part in parts[1:]:
        if not part:
            raise Garbage("ZDLE twice in data")
        c = part[0]
        out.append(bytes([_UNESCAPED.get(c, c ^ 0x40)]))
        out.append(part[1:])
    return b"".join(out)


class Frame(enum.IntEnum):
    ZRQINIT = 0
    ZRINIT = 1
    ZSINIT = 2
    ZACK = 3
    ZFILE = 4
    ZSKIP = 5
    ZNAK = 6
    ZABORT = 7
    ZFIN = 8
    ZRPOS = 9
    ZDATA = 10
    ZEOF = 11
    ZFERR = 12
    ZCRC = 13
    ZCHALLENGE = 14
    ZCOMPL = 15
    ZCAN = 16
    ZFREECNT = 17
    ZCOMMAND = 18


WITH_DATA = frozenset({Frame.ZFILE, Frame.ZDATA, Frame.ZSINIT, Frame.ZCOMMAND})


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, ZMODEM's 16-bit check."""
    return binascii.crc_hqx(data, 0)


@dataclass(frozen=True, slots=True)
class Header:
    frame: int
    pos: int  # the four bytes as ZP0..ZP3, little-endian (a position)


@dataclass(frozen=True, slots=True)
class Subpacket:
    data: bytes
    end: int  # ZCRCE, ZCRCG, ZCRCQ or ZCRCW


class Garbage(ValueError):
    """Bytes that are not ZMODEM: the session is over (or never was)."""


class FrameReader:
    """One direction's bytes to headers and subpackets; a state machine, so a
    frame may be cut anywhere by the end of a chunk."""

    def __init__(self) -> None:
        self.text = 0  # printable bytes seen outside frames
        self.cancels = 0
        self._state = "text"
        self._buf = bytearray()
        self._crc32 = False  # the last binary header was 'C': subpackets too
        self._escaped = False
        self._want = 0  # header bytes (decoded) or CRC bytes still to read
        self._kind = 0  # 'A', 'B' or 'C' while in a header
        self._end = 0  # the frame end of the subpacket whose CRC is read
        self._crc = bytearray()

    def feed(self, data: bytes) -> Iterator[Header | Subpacket]:
        """Frames completed by `data`; Garbage when it is not ZMODEM."""
        i, n = 0, len(data)
        while i < n:
            if self._state == "data" and not self._escaped:
                # The bulk of a transfer, decoded a run at a time: up to the
                # frame end (ZDLE then h, i, j or k: unambiguous, as ZDLE
                # itself is always escaped), a lone ZDLE at a chunk's end
                # left for the byte machine.
                m = _FRAME_END_RE.search(data, i)
                end = m.start() if m is not None else n
                if m is None and data.endswith(b"\x18"):
                    end -= 1
                if end > i:
                    self._buf += _unescape_run(data[i:end])
                    self.cancels = 0
                    i = end
                    continue
            item = self._byte(data[i])
            i += 1
            if item is not None:
                yield item

    def _byte(self, b: int) -> Header | Subpacket | None:
        if b == ZDLE:
            self.cancels += 1
            if self.cancels >= 5:
                raise Garbage("cancelled (five CANs)")
        else:
            self.cancels = 0
        state = self._state
        if state == "text":
            self._text(b)
            return None
        if state == "pad":  # ZPAD seen, ZDLE (or another ZPAD) next
            if b == ZPAD:
                return None
            self._state = "zdle" if b == ZDLE else "text"
            if b != ZDLE:
                self._text(b)
            return None
        if state == "zdle":
            if b in (0x41, 0x42, 0x43):  # 'A', 'B', 'C'
                self._kind = b
                self._crc32 = b == 0x43
                self._want = 14 if b == 0x42 else (9 if b == 0x43 else 7)
                self._buf.clear()
                self._escaped = False
                self._state = "header"
                return None
            raise Garbage(f"ZDLE then {b:#x} outside a frame")
        if b in FLOW_CONTROL:
            return None
        if state == "header":
            return self._header_byte(b)
        return self._data_byte(b)

    def _text(self, b: int) -> None:
        if b == ZPAD:
            self._state = "pad"
        elif 0x20 <= b < 0x7F and b != 0x4F:  # "OO" ends a session
            self.text += 1
            if self.text > TEXT_ALLOWANCE:
                raise Garbage("text outside frames")

    def _unescape(self, b: int) -> int | None:
        """A data byte once ZDLE-escaping is undone; None for a lone ZDLE."""
        if self._escaped:
            self._escaped = False
            return 0x7F if b == 0x6C else 0xFF if b == 0x6D else b ^ 0x40
        if b == ZDLE:
            self._escaped = True
            return None
        return b

    def _header_byte(self, b: int) -> Header | None:
        if self._kind == 0x42:  # hex: no escaping
            self._buf.append(b)
        else:
            value = self._unescape(b)
            if value is None:
                return None
            self._buf.append(value)
        if len(self._buf) < self._want:
            return None
        raw = bytes(self._buf)
        if self._kind == 0x42:
            try:
                raw = bytes.fromhex(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as e:
                raise Garbage("bad hex header") from e
            ok = crc16(raw[:5]) == int.from_bytes(raw[5:7], "big")
        elif self._kind == 0x41:
            ok = crc16(raw[:5]) == int.from_bytes(raw[5:7], "big")
        else:
            ok = zlib.crc32(raw[:5]) == int.from_bytes(raw[5:9], "little")
        if not ok:
            raise Garbage("header CRC")
        header = Header(raw[0], int.from_bytes(raw[1:5], "little"))
        self._buf.clear()
        self.text = 0
        self._state = "data" if header.frame in WITH_DATA else "text"
        return header

    def _data_byte(self, b: int) -> Subpacket | None:
        if self._state == "crc":
            value = self._unescape(b)
            if value is None:
                return None
            self._crc.append(value)
            if len(self._crc) < self._want:
                return None
            return self._subpacket()
        if self._escaped and b in FRAME_ENDS:
            self._escaped = False
            self._end = b
            self._crc = bytearray()
            self._want = 4 if self._crc32 else 2
            self._state = "crc"
            return None
        value = self._unescape(b)
        if value is not None:
            self._buf.append(value)
        return None

    def _subpacket(self) -> Subpacket:
        data = bytes(self._buf)
        if self._crc32:
            ok = zlib.crc32(data + bytes([self._end])) == int.from_bytes(
                self._crc, "little"
            )
        else:
            ok = crc16(data + bytes([self._end])) == int.from_bytes(self._crc, "big")
        if not ok:
            raise Garbage("data CRC")
        self._buf.clear()
        # ZCRCG and ZCRCQ: the frame goes on with another subpacket.
        self._state = "data" if self._end in (ZCRCG, ZCRCQ) else "text"
        return Subpacket(data, self._end)


@dataclass
class _File:
    name: str
    size: int | None
    started_at: float
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    next_pos: int = 0
    in_order: bool = True
    ended: bool = False  # ZEOF at the end of the data
    skipped: bool = False


class _Session:
    """One ZMODEM session's two directions, and the files it moved."""

    def __init__(self, direction: TransferDirection, now: float) -> None:
        self.direction = direction
        # The sender's frames carry the files: the host's output for sz.
        self.sender = Direction.OUTPUT if direction == "download" else Direction.INPUT
        self.readers = {Direction.OUTPUT: FrameReader(), Direction.INPUT: FrameReader()}
        self.files: list[_File] = []
        self.fin = {Direction.OUTPUT: False, Direction.INPUT: False}
        self.started_at = now
        self._last: Header | None = None  # the header the next subpackets belong to
        self._pos = 0

    def take(self, direction: Direction, data: bytes, now: float) -> None:
        """Read one direction's bytes; Garbage when the session is over."""
        for item in self.readers[direction].feed(data):
            if isinstance(item, Header):
                self._header(direction, item, now)
            elif direction == self.sender and self._last is not None:
                self._data(item, now)

    def _header(self, direction: Direction, h: Header, now: float) -> None:
        if h.frame == Frame.ZFIN:
            self.fin[direction] = True
        if direction != self.sender:
            if h.frame == Frame.ZSKIP and self.files:
                self.files[-1].skipped = True
            elif (
                h.frame == Frame.ZRPOS
                and self.files
                and h.pos != self.files[-1].next_pos
            ):
                self.files[-1].in_order = False  # a resend from there
                self.files[-1].next_pos = h.pos
            return
        self._last = h
        if h.frame == Frame.ZDATA:
            self._pos = h.pos
        elif h.frame == Frame.ZEOF and self.files:
            f = self.files[-1]
            f.ended = h.pos == f.next_pos

    def _data(self, sub: Subpacket, now: float) -> None:
        assert self._last is not None
        if self._last.frame == Frame.ZFILE:
            if len(sub.data) > MAX_INFO_BYTES:
                raise Garbage("ZFILE info too long")
            name, _, rest = sub.data.partition(b"\0")
            fields = rest.split(b"\0", 1)[0].split()
            size = int(fields[0]) if fields and fields[0].isdigit() else None
            self.files.append(_File(name.decode("utf-8", "replace"), size, now))
        elif self._last.frame == Frame.ZDATA and self.files:
            f = self.files[-1]
            if self._pos == f.next_pos:
                f.digest.update(sub.data)
                f.next_pos += len(sub.data)
            else:
                f.in_order = False
                f.next_pos = max(f.next_pos, self._pos + len(sub.data))
            self._pos += len(sub.data)

    @property
    def finished(self) -> bool:
        return self.fin[Direction.OUTPUT] and self.fin[Direction.INPUT]

    def records(
        self, now: float, why: str, offset: int, next_offset: int
    ) -> list[Transfer]:
        out = []
        for f in self.files:
            size = f.next_pos
            if f.skipped:
                outcome, reason = TransferOutcome.REFUSED, "skipped by the receiver"
            elif f.ended and (f.size is None or f.size == size):
                outcome, reason = TransferOutcome.COMPLETE, ""
            else:
                outcome, reason = TransferOutcome.CUT, why or "the session ended first"
            out.append(
                Transfer(
                    now,
                    self.direction,
                    f.name,
                    f.name,
                    size,
                    f.digest.hexdigest() if f.in_order else None,
                    f.started_at,
                    outcome,
                    reason,
                    offset,
                    next_offset,
                )
            )
        return out


class ZmodemFilter:
    """Events in, events out: ZMODEM sessions replaced by their Transfers."""

    def __init__(self) -> None:
        self._session: _Session | None = None
        self._tail = b""  # the host's last output bytes: a start may be cut
        self._pending: list[Transfer] = []  # emitted before the next record
        self._ended_at = -1  # offset of the record that ended the session
        self._over = b""  # what is left of the sender's closing "OO"

    def feed(self, event: Event) -> list[Event]:
        out: list[Event] = []
        if self._pending and event.offset != self._ended_at:
            out += [replace(t, next_offset=event.offset) for t in self._pending]
            self._pending = []
        if not isinstance(event, Chunk):
            if self._session is not None:
                # A detach or the end: bytes may be missing, or none will come.
                self._end(event.offset, event.time, "the session ended first")
                out += [replace(t, next_offset=event.offset) for t in self._pending]
                self._pending = []
            return [*out, event]
        if self._session is None:
            chunk = self._closing(event)
            return out + (self._idle(chunk) if chunk.data else [])
        return out + self._active(event)

    def _closing(self, chunk: Chunk) -> Chunk:
        """The host's output right after a session: its "OO" is the protocol's."""
        if not self._over or chunk.direction != Direction.OUTPUT:
            return chunk
        data = chunk.data
        while self._over and data[:1] == self._over[:1]:
            data, self._over = data[1:], self._over[1:]
        self._over = b""
        return replace(chunk, data=data)

    def finish(self, offset: int, now: float) -> list[Event]:
        """The log ended: a session still open was cut; records still waiting."""
        if self._session is not None:
            self._end(offset, now, "the log ended first")
        pending = [replace(t, next_offset=offset) for t in self._pending]
        self._pending = []
        return list(pending)

    def _idle(self, chunk: Chunk) -> list[Event]:
        if chunk.direction != Direction.OUTPUT:
            return [chunk]
        joined = self._tail + chunk.data
        self._tail = joined[-5:]
        for start, direction in STARTS.items():
            found = joined.find(start)
            if found < 0:
                continue
            # Where it begins in this chunk: before it, when the last one cut it.
            at = found - (len(joined) - len(chunk.data))
            self._session = _Session(direction, chunk.time)
            self._tail = b""
            before = chunk.data[: max(0, at)]
            head = [replace(chunk, data=before)] if before else []
            return head + self._active(replace(chunk, data=joined[found:]))
        return [chunk]

    def _active(self, chunk: Chunk) -> list[Event]:
        session = self._session
        assert session is not None
        if chunk.direction == Direction.INPUT:
            try:
                session.take(Direction.INPUT, chunk.data, chunk.time)
            except Garbage as e:
                self._end(chunk.offset, chunk.time, f"not ZMODEM any more ({e})")
                return [chunk]
            if session.finished:
                self._end(chunk.offset, chunk.time, "")
            return [chunk]  # the person's keys always go on
        data = chunk.data
        marker = data.find(MARKER)
        taken = data[:marker] if marker >= 0 else data
        try:
            if marker >= 0:
                raise Garbage("a shell is reading a line")
            session.take(Direction.OUTPUT, taken, chunk.time)
        except Garbage as e:
            # Not a session (any more): this write goes on whole, as printed.
            self._end(chunk.offset, chunk.time, f"not ZMODEM any more ({e})")
            return [chunk]
        if session.finished:
            self._end(chunk.offset, chunk.time, "")
        return []

    def _end(self, offset: int, now: float, why: str) -> None:
        session = self._session
        assert session is not None
        self._session = None
        self._ended_at = offset
        self._over = b"OO" if session.finished else b""
        self._pending += session.records(now, why, offset, offset)
