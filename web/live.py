"""A live session's recording as it grows: server-sent events for the player.

asciinema-player's `eventsource` driver takes a first message with the
terminal's size, the stream time it starts at and `init`, output to feed
before that (what the screen shows now), then `[time, code, data]` events,
and an `event: done` when the stream ends. So a late viewer sees the screen
as it is and then each new output, from the session's cast as the agent's
recorder commits it (complete lines only: the last may be half written);
over the fleet store, as the agent's shipper sends it (each second).

Each stream holds one of audit-web's threads: at most MAX_STREAMS at once
(more get a 503), each at most STREAM_MAX_S long (the browser's EventSource
connects again, and the viewer is checked again), and `init` is at most
INIT_MAX_BYTES of the latest output, so a long session does not make a big
first message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agent.access_log import Action
from agent.casts import CastError
from agent.records import ENDED, Session
from web.console import console, logged, session_name
from web.console_store import StoreUnavailable
from web.console_views import visible_session

log = logging.getLogger(__name__)

MAX_STREAMS = 8
STREAM_MAX_S = 300.0
POLL_INTERVAL_S = 0.25
KEEPALIVE_S = 15.0
INIT_MAX_BYTES = 256 * 1024
READ_MAX_BYTES = 1 << 20  # per poll: a burst of output is sent in pieces
RETRY_MS = 1000

_streams = threading.BoundedSemaphore(MAX_STREAMS)


def message(doc: Any, event: str = "") -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(doc, ensure_ascii=False) + "\n\n").encode()


def for_player(event: list[Any]) -> list[Any]:
    """A cast event as the live driver takes it: a resize as {cols, rows}."""
    if len(event) == 3 and event[1] == "r" and isinstance(event[2], str):
        cols, _, rows = event[2].partition("x")
        if cols.isdigit() and rows.isdigit():
            return [event[0], "r", {"cols": int(cols), "rows": int(rows)}]
    return event


def opening(data: bytes) -> tuple[bytes, int]:
    """The first message (size, time, init) of a cast's complete lines; its length."""
    lines = data.split(b"\n")
    header = json.loads(lines[0])
    cols, rows = int(header.get("width") or 80), int(header.get("height") or 24)
    at = 0.0
    output: list[str] = []
    for line in lines[1:]:
        try:
            t, code, value = json.loads(line)
        except ValueError:
            continue  # the empty piece after the last newline
        at = float(t)
        if code == "o":
            output.append(value)
        elif code == "r":
            c, _, r = str(value).partition("x")
            if c.isdigit() and r.isdigit():
                cols, rows = int(c), int(r)
    init = "".join(output)[-INIT_MAX_BYTES:]
    first = message({"cols": cols, "rows": rows, "time": at, "init": init})
    return b"retry: %d\n\n" % RETRY_MS + first, len(data)


def follow(session: Session, offset: int, until: float) -> Iterator[bytes]:
    """New events of the session's cast from `offset`; `done` once it ends."""
    try:
        yield from _follow(session, offset, until)
    except StoreUnavailable as e:  # the browser's EventSource connects again
        log.error("live view of %s: %s", session_name(session), e)


def _follow(session: Session, offset: int, until: float) -> Iterator[bytes]:
    reader = console().reader
    quiet_since = time.monotonic()
    while time.monotonic() < until:
        chunk = reader.recording_since(session, offset, READ_MAX_BYTES)
        end = chunk.rfind(b"\n")
        if end >= 0:
            offset += end + 1
            for line in chunk[: end + 1].splitlines():
                try:
                    yield message(for_player(json.loads(line)))
                except ValueError:
                    continue
            quiet_since = time.monotonic()
            continue
        now = reader.session(session.id, session.bastion)
        ended = now is None or now.status in ENDED
        if ended and not reader.recording_since(session, offset, READ_MAX_BYTES):
            yield message({}, "done")
            return
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            yield b": keepalive\n\n"
            quiet_since = time.monotonic()
        time.sleep(POLL_INTERVAL_S)


class _Stream:
    """A stream's events, holding one of the MAX_STREAMS places until closed.

    Django closes what it streams when the response ends, sent or not; a
    generator's own `finally` would not run if it was never started.
    """

    def __init__(self, events: Iterator[bytes]) -> None:
        self._events = events
        self._held = True

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        if self._held:
            self._held = False
            _streams.release()


@never_cache
@require_GET
def stream(request: HttpRequest, sid: str, bastion: str | None = None) -> HttpResponse:
    found = visible_session(request, sid, Action.REPLAY, bastion)
    if isinstance(found, HttpResponse):
        return found
    viewer, session = found
    try:
        first, offset = opening(console().reader.recording(session))
    except (CastError, ValueError) as e:
        return HttpResponse(f"no recording yet: {e}\n", status=404)
    if not _streams.acquire(blocking=False):
        return HttpResponse("too many live views at once\n", status=503)
    refused = logged(request, viewer, Action.REPLAY, session_name(session), "live")
    if refused is not None:
        _streams.release()
        return refused

    def events() -> Iterator[bytes]:
        yield first
        yield from follow(session, offset, time.monotonic() + STREAM_MAX_S)

    response = StreamingHttpResponse(
        _Stream(events()), content_type="text/event-stream"
    )
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
