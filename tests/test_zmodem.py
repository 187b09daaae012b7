"""ZMODEM in a terminal stream, on bytes the real lrzsz writes.

Each test runs Debian's `sz` and `rz` against each other through two pipes
and keeps both byte streams as they went, then feeds them to the filter as a
traced session's events would come: the program on the host's side is the
output, the person's terminal program the input.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import subprocess
from pathlib import Path

import pytest

from parsers.events import Chunk, Direction, Event, Transfer
from parsers.zmodem import ZmodemFilter

pytestmark = pytest.mark.skipif(
    shutil.which("sz") is None, reason="lrzsz is not installed (make test installs it)"
)


def capture(tmp_path: Path, host: list[str], person: list[str]) -> list[Chunk]:
    """Run the two through pipes we relay, keeping every write as an event."""
    recv = tmp_path / "recv"
    recv.mkdir(exist_ok=True)
    to_person_r, to_person_w = os.pipe()  # host's output, relayed to person
    from_host_r, from_host_w = os.pipe()
    to_host_r, to_host_w = os.pipe()
    from_person_r, from_person_w = os.pipe()
    host_proc = subprocess.Popen(
        host,
        stdin=to_host_r,
        stdout=from_host_w,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    person_proc = subprocess.Popen(
        person,
        stdin=to_person_r,
        stdout=from_person_w,
        stderr=subprocess.DEVNULL,
        cwd=recv,
    )
    for fd in (to_host_r, from_host_w, to_person_r, from_person_w):
        os.close(fd)
    sel = selectors.DefaultSelector()
    sel.register(from_host_r, selectors.EVENT_READ, (Direction.OUTPUT, to_person_w))
    sel.register(from_person_r, selectors.EVENT_READ, (Direction.INPUT, to_host_w))
    events: list[Chunk] = []
    open_streams = 2
    while open_streams:
        for key, _ in sel.select(timeout=30):
            direction, relay_to = key.data
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fd)
                os.close(key.fd)
                os.close(relay_to)
                open_streams -= 1
                continue
            n = len(events)
            events.append(Chunk(1000.0 + n, direction, data, n * 100))
            os.write(relay_to, data)
    assert host_proc.wait(30) == 0 and person_proc.wait(30) == 0
    return events


def run(events: list[Event]) -> list[Event]:
    f = ZmodemFilter()
    out: list[Event] = []
    for e in events:
        out += f.feed(e)
    return out + f.finish(10**9, 2000.0)


def screen(events: list[Event]) -> bytes:
    return b"".join(
        e.data
        for e in events
        if isinstance(e, Chunk) and e.direction == Direction.OUTPUT
    )


def shell_around(events: list[Chunk]) -> list[Event]:
    """The exchange between a prompt that ran it and the next one."""
    before = Chunk(1.0, Direction.OUTPUT, b"\x1b[?2004h$ sz f\r\n\x1b[?2004l\r", -2)
    after = Chunk(9e8, Direction.OUTPUT, b"\x1b[?2004h$ ", 10**8)
    return [before, *events, after]


def payload(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "payload.bin"
    # Every byte value, so ZDLE escaping of each one is exercised.
    path.write_bytes((bytes(range(256)) * (size // 256 + 1))[:size])
    return path


def test_a_download_becomes_one_transfer_and_leaves_the_screen(tmp_path: Path) -> None:
    file = payload(tmp_path, 70_000)
    events = capture(tmp_path, ["sz", "-q", "payload.bin"], ["rz", "-q", "-y"])
    assert (tmp_path / "recv" / "payload.bin").read_bytes() == file.read_bytes()
    out = run(shell_around(events))
    (t,) = [e for e in out if isinstance(e, Transfer)]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert (t.direction, t.name, t.size, t.sha256, t.outcome) == (
        "download",
        "payload.bin",
        70_000,
        digest,
        "complete",
    )
    shown = screen(out)
    assert shown.startswith(b"\x1b[?2004h$ sz f\r\n")
    assert shown.endswith(b"\x1b[?2004h$ ")
    assert b"\x18" not in shown  # no frame byte reached the screen
    assert len(shown) < 100
    # The person's keys (the terminal's acknowledgements) go on as they came.
    keys = [e for e in out if isinstance(e, Chunk) and e.direction == Direction.INPUT]
    assert keys == [e for e in events if e.direction == Direction.INPUT]
    # Resumed from the record after the session's end, nothing is read twice.
    assert t.next_offset > t.offset


def test_an_upload_is_read_from_the_persons_side(tmp_path: Path) -> None:
    file = payload(tmp_path, 20_000)
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    # rz on the host (an empty directory), sz behind the person's terminal.
    events = capture(host_dir, ["rz", "-q", "-y"], ["sz", "-q", str(file)])
    assert (host_dir / "payload.bin").read_bytes() == file.read_bytes()
    out = run(shell_around(events))
    (t,) = [e for e in out if isinstance(e, Transfer)]
    assert (t.direction, t.name, t.size, t.outcome) == (
        "upload",
        "payload.bin",
        20_000,
        "complete",
    )
    assert t.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert b"\x18" not in screen(out)


def test_any_cut_of_the_stream_reads_the_same(tmp_path: Path) -> None:
    payload(tmp_path, 3_000)
    events = capture(tmp_path, ["sz", "-q", "payload.bin"], ["rz", "-q", "-y"])
    whole = [e for e in run(shell_around(events)) if isinstance(e, Transfer)]
    bytewise = [
        Chunk(e.time, e.direction, e.data[i : i + 1], e.offset)
        for e in events
        for i in range(len(e.data))
    ]
    cut = [e for e in run(shell_around(bytewise)) if isinstance(e, Transfer)]
    assert [(t.size, t.sha256, t.outcome) for t in cut] == [
        (t.size, t.sha256, t.outcome) for t in whole
    ]


def test_a_printed_header_never_silences_the_parser() -> None:
    """`printf '**\\x18B00...'` then a prompt: the prompt and what follows pass."""
    fake = b"**\x18B00000000000000\r\x8a\x11"
    events: list[Event] = [
        Chunk(1.0, Direction.OUTPUT, b"$ printf ...\r\n" + fake, 0),
        Chunk(2.0, Direction.OUTPUT, b"\x1b[?2004h$ ", 100),
        Chunk(3.0, Direction.INPUT, b"rm -rf /x\r", 200),
        Chunk(4.0, Direction.OUTPUT, b"rm -rf /x\r\n\x1b[?2004l\r", 300),
    ]
    out = run(events)
    assert b"\x1b[?2004h$ rm -rf /x\r\n\x1b[?2004l\r" in screen(out)
    (t,) = [e for e in out if isinstance(e, Transfer)] or [None]
    assert t is None or t.outcome != "complete"
    # Text after a fake start ends it too.
    text = [
        Chunk(1.0, Direction.OUTPUT, fake, 0),
        Chunk(
            2.0, Direction.OUTPUT, b"a line of plain text printed to the screen\n", 1
        ),
    ]
    assert b"plain text" in screen(run(text))
