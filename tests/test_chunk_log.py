"""The paramiko recorder's chunk log: decoding, bad input, and the same commands.

The cross-check: a real strace session log decoded into events, written out
as a chunk log and decoded again, gives the parser the same events and the
same commands.
"""

from __future__ import annotations

from pathlib import Path

from parsers.chunk_log import (
    MAX_LINE_BYTES,
    ChunkLogDecoder,
    decode_chunk_log,
    encode_chunk,
    encode_resize,
)
from parsers.events import Chunk, Direction, Event, Marker, Resize
from parsers.pipeline import commands_from_events
from parsers.strace_lines import MARKER_PREFIX, decode_log

DATA = Path(__file__).parent / "data"
START = MARKER_PREFIX + b'{"event":"start","time":1.5,"rows":24,"cols":80}\n'


def to_chunk_log(events: list[Event]) -> bytes:
    out = [START]
    for e in events:
        if isinstance(e, Chunk):
            out.append(encode_chunk(e.time, e.direction, e.data))
        elif isinstance(e, Resize):
            out.append(encode_resize(e.time, e.rows, e.cols))
    out.append(MARKER_PREFIX + b'{"event":"end","time":9e9,"reason":"done"}\n')
    return b"".join(out)


def commands(events: list[Event]) -> list[str]:
    return [c.text for c in commands_from_events(events)]


def test_round_trip_keeps_every_byte_time_and_offset() -> None:
    data = bytes(range(256)) * 3
    log = (
        START
        + encode_chunk(2.25, Direction.INPUT, b"ls\r")
        + encode_chunk(2.5, Direction.OUTPUT, data)
        + encode_resize(3.0, 40, 120)
    )
    events = decode_chunk_log(log)
    assert isinstance(events[0], Marker) and events[0].kind == "start"
    assert events[1] == Resize(1.5, 24, 80, 0)  # the size at the start
    assert events[2] == Chunk(2.25, Direction.INPUT, b"ls\r", len(START))
    assert isinstance(events[3], Chunk) and events[3].data == data
    assert events[4] == Resize(3.0, 40, 120, log.rindex(b"3.000000 r"))


def test_same_commands_as_the_strace_log_it_was_made_from() -> None:
    strace_events = decode_log(
        (DATA / "bash_basic.strace").read_bytes(), tty="/dev/pts/0"
    )
    expected = commands(strace_events)
    assert expected
    assert commands(decode_chunk_log(to_chunk_log(strace_events))) == expected


def test_half_written_line_waits_and_offsets_resume() -> None:
    line = encode_chunk(5.0, Direction.OUTPUT, b"hello")
    decoder = ChunkLogDecoder()
    assert len(decoder.feed(START + line[:7])) == 2  # start marker and its resize
    assert decoder.pending_bytes == 7
    (event,) = decoder.feed(line[7:])
    assert event == Chunk(5.0, Direction.OUTPUT, b"hello", len(START))
    # A new decoder started at a checkpoint offset reads on from there.
    resumed = ChunkLogDecoder(offset=len(START))
    assert resumed.feed(line) == [event]


def test_garbage_is_counted_and_nothing_good_is_lost() -> None:
    good = encode_chunk(7.0, Direction.INPUT, b"x")
    bad = [
        b"not a record",
        b"7.0 i !!!notbase64!!!",
        b"7.0 q aGk=",
        b"abc i aGk=",
        b"7.0 r 0 80",
        b"7.0 r x y",
        MARKER_PREFIX + b"{broken json",
        b"\xff\xfe\x00",
    ]
    decoder = ChunkLogDecoder()
    events = decoder.feed(good + b"\n".join(bad) + b"\n" + good)
    assert [e.data for e in events if isinstance(e, Chunk)] == [b"x", b"x"]
    assert decoder.stats.junk == len(bad)


def test_a_huge_line_is_dropped_whole_without_holding_it() -> None:
    good = encode_chunk(8.0, Direction.OUTPUT, b"after")
    decoder = ChunkLogDecoder()
    events = []
    for _ in range(3):  # an endless line arriving in pieces
        events += decoder.feed(b"A" * (MAX_LINE_BYTES // 2 + 1))
        assert decoder.pending_bytes <= MAX_LINE_BYTES
    events += decoder.feed(b"tail of it\n" + good)
    assert decoder.stats.junk == 1
    assert [e.data for e in events if isinstance(e, Chunk)] == [b"after"]
    assert events[0].offset == decoder.offset - len(good)


def test_a_truncated_last_line_is_junk_at_finish() -> None:
    decoder = ChunkLogDecoder()
    decoder.feed(START + b"12.0 o aGVsbG")
    assert decoder.finish() == []
    assert decoder.stats.junk == 1
