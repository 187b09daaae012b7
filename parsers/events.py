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


class MarkerKind(enum.StrEnum):
    """The lifecycle lines of a session log (`#bastion-audit {"event": ...}`)."""

    START = "start"  # written once, before anything else
    ATTACH = "attach"  # a strace attached (again)
    DETACH = "detach"  # bytes may be missing from here until the next record
    END = "end"  # the session is over; nothing after it counts


@dataclass(frozen=True, slots=True)
class Marker:
    """A lifecycle line: session start, tracer attach/detach, session end."""

    time: float
    kind: MarkerKind
    fields: Mapping[str, Any] = field(default_factory=dict)
    offset: int = 0


class TransferDirection(enum.StrEnum):
    UPLOAD = "upload"  # to the host
    DOWNLOAD = "download"  # from the host


class TransferOutcome(enum.StrEnum):
    COMPLETE = "complete"
    REFUSED = "refused"  # by the grant, a limit or a hostile path; never started
    FAILED = "failed"  # the host or the client gave up
    CUT = "cut"  # the connection ended before the file was whole


@dataclass(frozen=True, slots=True)
class Transfer:
    """A file moved through the bastion, as the one who relayed it saw it."""

    time: float  # when it ended, or was refused
    direction: TransferDirection
    path: str  # on the host
    name: str  # as the client named it
    size: int  # bytes moved
    sha256: str | None  # of the bytes moved; None if they did not come in order
    started_at: float
    outcome: TransferOutcome
    reason: str = ""  # why it was refused, failed or cut
    offset: int = 0  # where its record starts in the log
    next_offset: int = 0  # where the record after it starts: resume from there


@dataclass(frozen=True, slots=True)
class Denied:
    """A line audit-shell kept from running: its Enter was never sent."""

    time: float
    text: str  # the line as it stood when Enter was pressed
    rule: str  # the deny rule's name
    offset: int = 0  # where its record starts in the log
    next_offset: int = 0  # where the record after it starts: resume from there


Event = Chunk | Resize | Marker | Transfer | Denied


FOREGROUND_CHARS = 512


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to restart the command pipeline so that it emits nothing twice.

    Taken right after an accepted line: the builder is then between lines,
    skipping output, so a fresh pipeline fed the log from `offset` (dropping
    the first `skip` bytes of that record's data) continues exactly. The
    store keeps it with the commands it released (agent/records.py).
    """

    offset: int
    skip: int
    rows: int
    cols: int
    readline: bool
    prompt: str
    pending_enters: int = 0
    # The last command the shell ran, whose program reads the next lines
    # (parsers/programs.py looks at its first FOREGROUND_CHARS only).
    foreground: str | None = None
    shell_prompts: tuple[str, ...] = ()  # the prompts the shell's lines came at


class LineKind(enum.StrEnum):
    """Who read an accepted line (README: What counts as a command)."""

    COMMAND = "command"  # the session's shell ran it
    INPUT = "input"  # another interactive program read it (python, sqlite3, …)
    HIDDEN_INPUT = "hidden_input"  # keys typed at a shell prompt that did not echo


@dataclass(frozen=True, slots=True)
class CommandLine:
    """One line the remote shell (or a program) accepted, as it stood on the screen."""

    time: float
    text: str
    prompt: str
    checkpoint: Checkpoint
    kind: LineKind = LineKind.COMMAND
    program: str | None = None  # for an input: the command line that started it
    typed: str | None = None  # what was typed, when bash ran its expansion instead
    keys: int = 0  # for hidden input: how many keys were typed, never which
    after_cancel: bool = False  # Ctrl-C was typed since the line before
