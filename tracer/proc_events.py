"""The kernel's process events connector: every exec and exit, as it happens.

A netlink socket (NETLINK_CONNECTOR, multicast group CN_IDX_PROC) on which
the kernel reports each fork, exec and exit (linux/cn_proc.h). Root only
(CAP_NET_ADMIN), and only in the initial network namespace: elsewhere (most
containers) `open()` raises and discovery falls back on polling.

Layout of one message (all native-endian, linux/netlink.h, connector.h):
  nlmsghdr  u32 len, u16 type, u16 flags, u32 seq, u32 pid      16 bytes
  cn_msg    u32 idx, u32 val, u32 seq, u32 ack, u16 len, u16 fl  20 bytes
  proc_event u32 what, u32 cpu, u64 timestamp_ns                16 bytes
            then per event: fork: parent pid, tgid, child pid, tgid;
            exec: pid, tgid; exit: pid, tgid, exit code, signal.
"""

from __future__ import annotations

import enum
import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from tracer import TracerError

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not in Python's socket module
RCVBUF_BYTES = 4 << 20  # a fork storm between two reads fits
ACK_TIMEOUT_S = 1.0

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")
_TWO_IDS = struct.Struct("=II")
_FOUR_IDS = struct.Struct("=IIII")
_BODY = _NLMSGHDR.size + _CN_MSG.size


class ProcEventsError(TracerError):
    """The connector cannot be used here."""


class Kind(enum.IntEnum):
    """proc_event.what (linux/cn_proc.h), the ones discovery needs."""

    NONE = 0x00000000  # the kernel's answer to our subscription
    FORK = 0x00000001
    EXEC = 0x00000002
    EXIT = 0x80000000


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """One event about a process (thread group): its pid is the tgid."""

    kind: Kind
    pid: int


def decode(data: bytes) -> Iterator[ProcEvent]:
    """The process events in one datagram; threads' own events left out."""
    offset = 0
    while offset + _BODY + _EVENT_HEAD.size <= len(data):
        length, _type, _flags, _seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        idx, _val, _cseq, _ack, _len, _fl = _CN_MSG.unpack_from(
            data, offset + _NLMSGHDR.size
        )
        at = offset + _BODY
        what = _EVENT_HEAD.unpack_from(data, at)[0]
        body = at + _EVENT_HEAD.size
        if idx == CN_IDX_PROC:
            if what == Kind.EXEC and body + _TWO_IDS.size <= len(data):
                _pid, tgid = _TWO_IDS.unpack_from(data, body)
                yield ProcEvent(Kind.EXEC, tgid)
            elif what == Kind.FORK and body + _FOUR_IDS.size <= len(data):
                _ppid, _ptgid, child, child_tgid = _FOUR_IDS.unpack_from(data, body)
                if child == child_tgid:  # a new process, not a new thread
                    yield ProcEvent(Kind.FORK, child)
            elif what == Kind.EXIT and body + _TWO_IDS.size <= len(data):
                pid, tgid = _TWO_IDS.unpack_from(data, body)
                if pid == tgid:
                    yield ProcEvent(Kind.EXIT, tgid)
            elif what == Kind.NONE:
                yield ProcEvent(Kind.NONE, 0)
        offset += (length + 3) & ~3  # NLMSG_ALIGN


def _control(op: int, only: int | None = None) -> bytes:
    # Since Linux 6.6 (cn_proc.h struct proc_input) the subscription may carry
    # the events wanted; the kernel then sends no others to this socket.
    payload = struct.pack("=I", op) if only is None else struct.pack("=II", op, only)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn


class ProcEvents:
    """A subscription to the connector; `read()` drains what has arrived."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._only = 0
        self.overflows = 0  # times the kernel dropped events (ENOBUFS)

    def open(self, only: int = Kind.EXEC) -> None:
        """Subscribe, and wait for the kernel's answer (ProcEventsError if none).

        `only`: the events wanted (a mask of Kind), where the kernel can
        filter; older kernels send every event, and `read()` leaves out the
        rest.
        """
        try:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR
            )
        except OSError as e:
            raise ProcEventsError(f"no process events connector: {e.strerror}") from e
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            sock.bind((0, CN_IDX_PROC))
            sock.send(_control(PROC_CN_MCAST_LISTEN))
            if not self._acknowledged(sock):
                raise ProcEventsError("the process events connector did not answer")
            # Then narrow it down. The kernel's answer is an event too, which
            # a filter would drop, hence this order; a kernel before 6.6
            # ignores a message of this size and goes on sending everything.
            sock.send(_control(PROC_CN_MCAST_LISTEN, only))
        except OSError as e:
            sock.close()
            raise ProcEventsError(f"cannot subscribe to process events: {e}") from e
        except ProcEventsError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._only = only

    @staticmethod
    def _acknowledged(sock: socket.socket) -> bool:
        sock.settimeout(ACK_TIMEOUT_S)
        try:
            while True:
                data = sock.recv(65536)
                if any(e.kind is Kind.NONE for e in decode(data)):
                    return True
        except TimeoutError:
            return False

    def fileno(self) -> int:
        if self._sock is None:
            raise ProcEventsError("process events are not open")
        return self._sock.fileno()

    def read(self) -> tuple[list[ProcEvent], bool]:
        """Events that arrived since the last read; and whether some were lost."""
        if self._sock is None:
            return [], False
        events: list[ProcEvent] = []
        lost = False
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self.overflows += 1
                lost = True  # the socket goes on; what was dropped is gone
                continue
            events.extend(e for e in decode(data) if e.kind & self._only)
        return events, lost

    def close(self) -> None:
        if self._sock is None:
            return
        try:
            self._sock.setblocking(True)
            self._sock.send(_control(PROC_CN_MCAST_IGNORE))
        except OSError:
            pass  # closing drops the subscription all the same
        self._sock.close()
        self._sock = None
