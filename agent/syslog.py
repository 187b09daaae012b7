"""Syslog for the fleet events: RFC 5424 messages over UDP, TCP or a local socket.

- `udp://HOST[:PORT]`: one RFC 5424 message a datagram (RFC 5426).
- `tcp://HOST[:PORT]`: RFC 5424 messages with octet-counting framing,
  `LENGTH SP MESSAGE` (RFC 6587 3.4.1), which lets a message hold newlines.
- `unix:PATH` (`unix:/dev/log`): one datagram a message to the local syslog
  daemon in the format glibc's syslog(3) sends there, `<PRI>Mmm dd hh:mm:ss
  APP[PID]: MSG`: journald and rsyslog's imuxsock parse that, not RFC 5424.

The MSG is the event as one line of JSON (no structured data: `-`), so that
a central rsyslog, Vector or Fluent Bit takes the fields out as they are.
"""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

from agent import AgentError

DEFAULT_PORT = 514
CONNECT_TIMEOUT_S = 3.0
SEND_TIMEOUT_S = 5.0
APP_NAME = "bastion-audit"
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
SEVERITY_NOTICE = 5
SEVERITY_INFO = 6
_TARGET_RE = re.compile(
    r"(udp|tcp)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d+))?/?"
)


class SyslogError(AgentError):
    """A syslog target that cannot be used."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str  # "udp", "tcp" or "unix"
    address: str  # host, or the socket's path
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.address}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(text: str) -> Target:
    """`udp://host:514`, `tcp://[::1]:6514`, `unix:/dev/log` to a Target."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]  # unix:///dev/log
        if not path.startswith("/"):
            raise SyslogError(f"{text!r}: a unix socket needs an absolute path")
        return Target("unix", path)
    m = _TARGET_RE.fullmatch(text)
    if m is None:
        raise SyslogError(
            f"{text!r} is not udp://HOST[:PORT], tcp://HOST[:PORT] or unix:PATH"
        )
    port = int(m.group(3) or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise SyslogError(f"{text!r}: port {port} is out of range")
    return Target(m.group(1), m.group(2).strip("[]"), port)


def rfc5424(
    pri: int, timestamp: str, hostname: str, procid: int, msgid: str, msg: bytes
) -> bytes:
    """`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (RFC 5424 6)."""
    host = "".join(c for c in hostname if "!" <= c <= "~")[:255] or "-"
    header = f"<{pri}>1 {timestamp} {host} {APP_NAME} {procid} {msgid} -"
    return header.encode("ascii") + b" " + msg


def local_format(pri: int, when: float, procid: int, msg: bytes) -> bytes:
    """What glibc's syslog(3) writes to /dev/log: `<PRI>Mmm dd hh:mm:ss TAG: MSG`."""
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(when))
    return f"<{pri}>{stamp} {APP_NAME}[{procid}]: ".encode("ascii") + msg


def frame(target: Target, message: bytes) -> bytes:
    """TCP needs octet counting; a datagram is its own frame."""
    if target.scheme == "tcp":
        return str(len(message)).encode("ascii") + b" " + message
    return message


class Sender:
    """One connection to a syslog receiver; connects lazily, raises OSError."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.sock: socket.socket | None = None

    def send(self, data: bytes) -> None:
        if self.sock is not None and self.target.scheme == "tcp" and self._peer_gone():
            self.close()  # else the first send after a close "succeeds", lost
        if self.sock is None:
            self.sock = self._connect()
        try:
            if self.target.scheme == "tcp":
                self.sock.sendall(data)
            else:
                self.sock.send(data)
        except OSError:
            self.close()
            raise

    def _peer_gone(self) -> bool:
        assert self.sock is not None
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except OSError:
            return True

    def _connect(self) -> socket.socket:
        t = self.target
        if t.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address: Any = t.address
        else:
            kind = socket.SOCK_STREAM if t.scheme == "tcp" else socket.SOCK_DGRAM
            family, _, _, _, address = socket.getaddrinfo(t.address, t.port, type=kind)[
                0
            ]
            sock = socket.socket(family, kind)
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(address)
            sock.settimeout(SEND_TIMEOUT_S)
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
