"""The paramiko recorder's session log ("chunk log") to timed terminal events.

audit-shell's paramiko backend (agent/shell/paramiko_relay.py) records the two byte
streams it relays itself, no strace needed. Its log has the same lifecycle
lines as a strace log (`#bastion-audit {json}`: start, end, and detach for a
stretch it could not write), and one line per chunk or resize between them:

    1732790000.123456 i aGVsbG8=      keys the user typed (base64)
    1732790000.125001 o aGVsbG8NCg==  bytes the remote side sent to the screen
    1732790000.200000 r 40 120        the terminal's size (rows, cols)
    1732790000.300000 t eyJkaXJl...  a file transfer (base64 of its JSON fields)
    1732790000.400000 d eyJ0ZXh0...  a line a deny rule kept from running

Line-based on purpose: a record's offset is where its line starts, so the
ingest's checkpoints and its "half-written last line waits" rule work as for
strace logs. Base64 keeps any byte off the line structure. Pure: bytes in,
records out; bad lines are counted, never raised.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from parsers.events import (
    Chunk,
    Denied,
    Direction,
    Event,
    Resize,
    Transfer,
    TransferDirection,
    TransferOutcome,
)
from parsers.strace_lines import MARKER_PREFIX, DecoderStats, marker_events

SUFFIX = ".chunks"
# One chunk of up to 1 MiB of data is about 1.4 MiB of base64; a line longer
# than this is not one the recorder writes: skipped whole, counted as junk.
MAX_LINE_BYTES = 2 << 20
_KINDS = {b"i": Direction.INPUT, b"o": Direction.OUTPUT}


def encode_chunk(time: float, direction: Direction, data: bytes) -> bytes:
    """One chunk line, newline included."""
    kind = b"i" if direction is Direction.INPUT else b"o"
    stamp = f"{time:.6f}".encode("ascii")
    return stamp + b" " + kind + b" " + binascii.b2a_base64(data, newline=True)


def encode_resize(time: float, rows: int, cols: int) -> bytes:
    return f"{time:.6f} r {rows} {cols}\n".encode("ascii")


def encode_transfer(t: Transfer) -> bytes:
    fields = {
        "direction": t.direction,
        "path": t.path,
        "name": t.name,
        "size": t.size,
        "sha256": t.sha256,
        "started_at": round(t.started_at, 6),
        "outcome": t.outcome,
        "reason": t.reason,
    }
    doc = json.dumps(fields, separators=(",", ":")).encode()
    return f"{t.time:.6f} t ".encode() + binascii.b2a_base64(doc, newline=True)


DENIED_TEXT_MAX = 1 << 20


def encode_denied(d: Denied) -> bytes:
    doc = json.dumps({"text": d.text, "rule": d.rule}, separators=(",", ":"))
    return f"{d.time:.6f} d ".encode() + binascii.b2a_base64(doc.encode(), newline=True)


def decode_denied(
    time: float, data: bytes, offset: int, next_offset: int
) -> Denied | None:
    """A denied line's record; None if it is not one audit-shell writes."""
    try:
        fields: Any = json.loads(binascii.a2b_base64(data, strict_mode=True))
        text, rule = fields["text"], fields["rule"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(text, str) and isinstance(rule, str)) or not rule:
        return None
    return Denied(time, text[:DENIED_TEXT_MAX], rule[:64], offset, next_offset)


def decode_transfer(
    time: float, data: bytes, offset: int, next_offset: int
) -> Transfer | None:
    """A transfer line's record; None if it is not one the relay writes."""
    try:
        fields: Any = json.loads(binascii.a2b_base64(data, strict_mode=True))
        size, sha = fields["size"], fields["sha256"]
        text = {k: fields[k] for k in ("path", "name", "reason")}
        started_at = fields["started_at"]
        direction = TransferDirection(fields["direction"])
        outcome = TransferOutcome(fields["outcome"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    if (
        type(size) is not int
        or size < 0
        or not all(isinstance(v, str) for v in text.values())
    ):
        return None
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        return None
    if isinstance(started_at, bool) or not isinstance(started_at, (int, float)):
        return None
    return Transfer(
        time,
        direction,
        text["path"],
        text["name"],
        size,
        sha,
        float(started_at),
        outcome,
        text["reason"],
        offset,
        next_offset,
    )


@dataclass
class ChunkLogDecoder:
    """Turns a growing chunk log into events, one complete line at a time.

    The same interface as StraceDecoder (offset, stats, feed, finish), so the
    ingest follows either kind of log the same way. `tty` is unused: the
    recorder writes only the user's terminal.
    """

    tty: str | None = None
    offset: int = 0  # log offset of the first byte not yet fed
    stats: DecoderStats = field(default_factory=DecoderStats)
    _partial: bytes = b""
    _skipping: bool = False  # inside an over-long line, until its newline

    def feed(self, data: bytes) -> list[Event]:
        """Decode every complete line in `data`; keep a half-written last line."""
        buf = self._partial + data
        pos = self.offset - len(self._partial)
        self.offset += len(data)
        lines = buf.split(b"\n")
        self._partial = lines.pop()
        events: list[Event] = []
        for line in lines:
            if self._skipping:
                self._skipping = False  # the over-long line ends here
            else:
                events.extend(self.decode_line(line, pos))
            pos += len(line) + 1
        if len(self._partial) > MAX_LINE_BYTES:
            # Never hold an endless line in memory: drop it, count it once.
            self._junk(self._partial)
            self._partial = b""
            self._skipping = True
        return events

    def finish(self) -> list[Event]:
        """Decode a last line that never got its newline (the recorder is gone)."""
        line, self._partial = self._partial, b""
        if not line or self._skipping:
            return []
        return list(self.decode_line(line, self.offset - len(line)))

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
        if not line.strip():
            return
        event = self._record(line, offset)
        if event is None:
            self._junk(line)
            return
        self.stats.events += 1
        yield event

    def _record(self, line: bytes, offset: int) -> Event | None:
        parts = line.split(b" ")
        try:
            time = float(parts[0])
        except (ValueError, IndexError):
            return None
        if len(parts) == 3 and parts[1] in _KINDS:
            try:
                data = binascii.a2b_base64(parts[2], strict_mode=True)
            except binascii.Error:
                return None
            return Chunk(time, _KINDS[parts[1]], data, offset) if data else None
        if len(parts) == 4 and parts[1] == b"r":
            if not (parts[2].isdigit() and parts[3].isdigit()):
                return None
            rows, cols = int(parts[2]), int(parts[3])
            if not (0 < rows < 10000 and 0 < cols < 10000):
                return None
            return Resize(time, rows, cols, offset)
        if len(parts) == 3 and parts[1] == b"t":
            return decode_transfer(time, parts[2], offset, offset + len(line) + 1)
        if len(parts) == 3 and parts[1] == b"d":
            return decode_denied(time, parts[2], offset, offset + len(line) + 1)
        return None

    def _junk(self, line: bytes) -> None:
        self.stats.junk += 1
        self.stats.last_junk = line[:200]


def decode_chunk_log(data: bytes) -> list[Event]:
    """Decode a whole chunk log at once (tests, benchmarks)."""
    decoder = ChunkLogDecoder()
    return decoder.feed(data) + decoder.finish()
