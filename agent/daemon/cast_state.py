"""SESSION.cast.state: how far a session's recording goes, kept between runs.

The recorder (agent/daemon/recorder.py) writes it at every commit; the
shipper and retention read it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from agent.files import write_whole
from agent.records import shallow_dict

log = logging.getLogger(__name__)

STATE_SUFFIX = ".cast.state"
STATE_BYTES = 512  # the state file: one sector
DEFAULT_ROWS, DEFAULT_COLS = 24, 80


@dataclass
class CastState:
    """What SESSION.cast.state keeps between runs of the agent."""

    identity: list[int] = dataclasses.field(default_factory=list)  # ssh pid, ticks
    inode: int = 0  # the log the offsets belong to
    offset: int = -1  # log offset of the last event taken
    size: int = 0  # bytes of the cast that are committed
    base: float = 0.0  # epoch time of 0 in the cast: the session's start
    t: float = 0.0  # time of the last event, seconds since `base`
    recorded: int = 0  # bytes of output events written
    burst: int = 0  # of which since the last keystroke
    burst_dropped: int = 0  # output bytes dropped since the last keystroke
    dropped: int = 0  # output bytes never recorded, in all
    stopped: bool = False  # max_bytes reached: nothing more is recorded
    gaps: int = 0  # session gaps already marked
    rows: int = DEFAULT_ROWS
    cols: int = DEFAULT_COLS
    pending: str = ""  # hex: the start of a UTF-8 sequence cut by a chunk's end
    closed: bool = False

    @classmethod
    def load(cls, path: Path) -> CastState | None:
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in doc.items() if k in fields})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            log.error("recording state %s is unreadable (%s); starting over", path, e)
            return None

    def save(self, path: Path) -> None:
        """Write the state file (no fsync: that is for close).

        This runs for every commit. It is one sector written in place, padded
        with blanks that JSON readers skip: no rename over the old file, which
        on ext4 (auto_da_alloc) waits for the new file's data to reach the
        disk, milliseconds behind the store's fsyncs. A state too long for a
        sector is replaced whole, as a new file renamed over the old.
        """
        data = json.dumps(shallow_dict(self), separators=(",", ":")).encode("ascii")
        if len(data) > STATE_BYTES:
            tmp = path.with_name(path.name + ".tmp")
            write_whole(tmp, data)
            os.replace(tmp, path)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, data.ljust(STATE_BYTES), 0)  # a sector: written whole
            if os.fstat(fd).st_size > STATE_BYTES:
                os.ftruncate(fd, STATE_BYTES)  # a longer state, written whole before
        finally:
            os.close(fd)
