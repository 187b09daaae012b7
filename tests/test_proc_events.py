"""The kernel's process events: decoding, and a real subscription."""

from __future__ import annotations

import select
import struct
import subprocess
import time

import pytest

from tracer.proc_events import CN_IDX_PROC, Kind, ProcEvent, ProcEvents, decode


def datagram(what: int, *ids: int) -> bytes:
    event = struct.pack("=IIQ", what, 0, 123) + struct.pack(f"={len(ids)}I", *ids)
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, 1, 0, 0, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_decode_keeps_processes_and_leaves_threads_out() -> None:
    assert list(decode(datagram(Kind.EXEC, 41, 40))) == [ProcEvent(Kind.EXEC, 40)]
    # fork: parent pid, parent tgid, child pid, child tgid
    assert list(decode(datagram(Kind.FORK, 1, 1, 50, 50))) == [ProcEvent(Kind.FORK, 50)]
    assert list(decode(datagram(Kind.FORK, 1, 1, 51, 50))) == []  # a thread
    exit_ = datagram(Kind.EXIT, 60, 60, 0, 17)
    assert list(decode(exit_)) == [ProcEvent(Kind.EXIT, 60)]
    assert list(decode(datagram(Kind.EXIT, 61, 60, 0, 17))) == []  # a thread's
    assert list(decode(b"\x00" * 7)) == []  # short: nothing, never an error
    two = datagram(Kind.EXEC, 70, 70) + datagram(Kind.EXEC, 71, 71)
    assert [e.pid for e in decode(two)] == [70, 71]


@pytest.mark.root
def test_an_exec_is_reported_as_it_happens() -> None:
    events = ProcEvents()
    events.open()
    try:
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        poller = select.poll()
        poller.register(events.fileno(), select.POLLIN)
        deadline = time.monotonic() + 10
        seen: list[ProcEvent] = []
        while time.monotonic() < deadline:
            poller.poll(100)
            got, _ = events.read()
            seen += got
            if ProcEvent(Kind.EXEC, child.pid) in seen:
                break
        assert ProcEvent(Kind.EXEC, child.pid) in seen
        assert all(e.kind is Kind.EXEC for e in seen)  # what was asked for only
    finally:
        events.close()
