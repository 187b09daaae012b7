"""SFTP version 3 on the wire: packets framed, read and built (pure).

The protocol is draft-ietf-secsh-filexfer-02, the version OpenSSH's
sftp-server speaks (and its scp, since OpenSSH 9.0). A packet is a uint32
length, a type byte and the payload; strings are a uint32 length and bytes;
every request but INIT carries a uint32 id its reply repeats. Only what the
transfer relay (agent/shell/sftp_relay.py) needs to look at is decoded; the
rest passes through as it came.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAX_PACKET_BYTES = 256 * 1024 + 1024  # OpenSSH's SFTP_MAX_MSG_LENGTH is 256 KiB
VERSION = 3
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class WireError(ValueError):
    """Bytes that are not a well-formed SFTP packet."""


class Op(enum.IntEnum):
    INIT = 1
    VERSION = 2
    OPEN = 3
    CLOSE = 4
    READ = 5
    WRITE = 6
    LSTAT = 7
    FSTAT = 8
    SETSTAT = 9
    FSETSTAT = 10
    OPENDIR = 11
    READDIR = 12
    REMOVE = 13
    MKDIR = 14
    RMDIR = 15
    REALPATH = 16
    STAT = 17
    RENAME = 18
    READLINK = 19
    SYMLINK = 20
    STATUS = 101
    HANDLE = 102
    DATA = 103
    NAME = 104
    ATTRS = 105
    EXTENDED = 200
    EXTENDED_REPLY = 201


class Status(enum.IntEnum):
    OK = 0
    EOF = 1
    NO_SUCH_FILE = 2
    PERMISSION_DENIED = 3
    FAILURE = 4
    BAD_MESSAGE = 5
    OP_UNSUPPORTED = 8


# SSH_FXF_* open flags.
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 16, 32
# SSH_FILEXFER_ATTR_* flags.
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 1, 2, 4, 8
ATTR_EXTENDED = 0x80000000
S_IFDIR = 0o040000


@dataclass(frozen=True, slots=True)
class Packet:
    op: int
    payload: bytes  # after the type byte

    def encode(self) -> bytes:
        return _U32.pack(len(self.payload) + 1) + bytes([self.op]) + self.payload

    @property
    def request_id(self) -> int:
        """The id of a request or a reply (not of INIT or VERSION)."""
        return Reader(self.payload).u32()


class Framer:
    """Splits a byte stream into packets; keeps a packet cut by a read's end."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets = []
        while len(self._buffer) >= 4:
            (length,) = _U32.unpack_from(self._buffer)
            if not 1 <= length <= MAX_PACKET_BYTES:
                raise WireError(f"packet length {length} out of bounds")
            if len(self._buffer) < 4 + length:
                break
            body = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            packets.append(Packet(body[0], body[1:]))
        return packets

    @property
    def pending(self) -> int:
        return len(self._buffer)


class Reader:
    """Reads the fields of a payload in order; WireError when it runs short."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WireError("packet too short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def string(self) -> bytes:
        return self._take(self.u32())

    def attrs(self) -> Attrs:
        flags = self.u32()
        size = self.u64() if flags & ATTR_SIZE else None
        if flags & ATTR_UIDGID:
            self.u32(), self.u32()
        permissions = self.u32() if flags & ATTR_PERMISSIONS else None
        times = (self.u32(), self.u32()) if flags & ATTR_ACMODTIME else None
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.string(), self.string()
        return Attrs(size, permissions, times)

    def rest(self) -> bytes:
        return self.data[self.pos :]


@dataclass(frozen=True, slots=True)
class Attrs:
    size: int | None = None
    permissions: int | None = None
    times: tuple[int, int] | None = None  # atime, mtime

    def encode(self) -> bytes:
        flags = 0
        out = b""
        if self.size is not None:
            flags |= ATTR_SIZE
            out += _U64.pack(self.size)
        if self.permissions is not None:
            flags |= ATTR_PERMISSIONS
            out += _U32.pack(self.permissions)
        if self.times is not None:
            flags |= ATTR_ACMODTIME
            out += _U32.pack(self.times[0]) + _U32.pack(self.times[1])
        return _U32.pack(flags) + out


def u32(n: int) -> bytes:
    return _U32.pack(n)


def u64(n: int) -> bytes:
    return _U64.pack(n)


def string(data: bytes | str) -> bytes:
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return _U32.pack(len(raw)) + raw


def status(request_id: int, code: Status, message: str) -> Packet:
    return Packet(Op.STATUS, u32(request_id) + u32(code) + string(message) + string(""))


def handle_reply(request_id: int, handle: bytes) -> Packet:
    return Packet(Op.HANDLE, u32(request_id) + string(handle))


def attrs_reply(request_id: int, attrs: Attrs) -> Packet:
    return Packet(Op.ATTRS, u32(request_id) + attrs.encode())


def name_reply(request_id: int, names: list[tuple[str, str, Attrs]]) -> Packet:
    """NAME: (filename, longname, attrs) each."""
    body = u32(request_id) + u32(len(names))
    for filename, longname, attrs in names:
        body += string(filename) + string(longname) + attrs.encode()
    return Packet(Op.NAME, body)


def version_reply(extensions: list[tuple[bytes, bytes]]) -> Packet:
    body = u32(VERSION)
    for name, data in extensions:
        body += string(name) + string(data)
    return Packet(Op.VERSION, body)


def parse_status(packet: Packet) -> tuple[int, int, str]:
    """A STATUS reply's id, code and message."""
    r = Reader(packet.payload)
    request_id, code = r.u32(), r.u32()
    message = r.string().decode("utf-8", "replace") if r.pos < len(r.data) else ""
    return request_id, code, message


def with_path(packet: Packet, path: bytes) -> Packet:
    """A path request (OPEN, STAT, ...) with its first path replaced."""
    r = Reader(packet.payload)
    request_id = r.u32()
    r.string()
    return Packet(packet.op, u32(request_id) + string(path) + r.rest())


def with_handle(packet: Packet, handle: bytes) -> Packet:
    """A handle request (READ, WRITE, CLOSE, ...) with its handle replaced."""
    r = Reader(packet.payload)
    request_id = r.u32()
    r.string()
    return Packet(packet.op, u32(request_id) + string(handle) + r.rest())
