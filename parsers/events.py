"""Timed terminal events: what the parser stages pass between them.

Whatever records a session (strace on the ssh client today, another recorder
tomorrow), the command reconstruction only sees these records.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Direction(enum.Enum):
    INPUT = "in"  # keystrokes the user typed, as ssh read them from the tty
    OUTPUT = "out"  # bytes ssh wrote to the user's screen


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes that crossed the user's terminal at `time` (epoch seconds)."""

    time: float
    direction: Direction
    data: bytes
    offset: int  # where the record starts in its log, for resuming


@dataclass(frozen=True, slots=True)
class Resize:
    """The terminal size ssh read with TIOCGWINSZ."""

    time: float
    rows: int
    cols: int
    offset: int


@dataclass(frozen=True, slots=True)
class Marker:
    """A lifecycle line: session start, tracer attach/detach, session end."""

    time: float
    kind: str  # "start", "attach", "detach" or "end"
    fields: Mapping[str, Any] = field(default_factory=dict)
    offset: int = 0


Event = Chunk | Resize | Marker
