"""A file open on the host, followed by the SFTP relay for its transfer record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from agent.shell import sftp_wire as w
from parsers.events import Transfer, TransferDirection, TransferOutcome

_WRITING = w.FXF_WRITE | w.FXF_APPEND | w.FXF_CREAT | w.FXF_TRUNC


def open_flags(p: w.Packet) -> int:
    """The pflags of an OPEN request."""
    r = w.Reader(p.payload)
    r.u32(), r.string()
    return r.u32()


def direction_of(p: w.Packet) -> TransferDirection:
    """Which way an OPEN would move bytes: any writing flag makes it an upload."""
    if open_flags(p) & _WRITING:
        return TransferDirection.UPLOAD
    return TransferDirection.DOWNLOAD


@dataclass
class WatchedFile:
    """What the relay knows of a file between its OPEN and its CLOSE."""

    direction: TransferDirection
    path: str  # on the host
    name: str  # as the client named it
    started_at: float
    limit: int
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    next_offset: int = 0  # where the bytes in order have reached
    size: int = 0
    in_order: bool = True
    refused: str = ""
    failed: str = ""

    def took(self, offset: int, data: bytes) -> None:
        """Bytes at `offset` passed through; hashed while they come in order."""
        if self.in_order and offset == self.next_offset:
            self.digest.update(data)
            self.next_offset += len(data)
        else:
            self.in_order = False
        self.size = max(self.size, offset + len(data))

    def record(self, now: float, outcome: TransferOutcome, reason: str) -> Transfer:
        return Transfer(
            time=now,
            direction=self.direction,
            path=self.path,
            name=self.name,
            size=self.size,
            sha256=self.digest.hexdigest() if self.in_order else None,
            started_at=self.started_at,
            outcome=outcome,
            reason=reason,
        )
