"""A unix socket served one request at a time by one owned thread.

audit-web's token redemption (web/redeem.py) and the daemon's control socket
(agent/daemon/control.py) are both this: a stale socket of a killed process
replaced, the file's mode set, the kernel asked who is calling
(`peer_uid`, SO_PEERCRED), and the thread stopped and joined on exit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from agent import AgentError

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """The calling process's pid and uid, as the kernel says."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _ = _UCRED.unpack(creds)
    return pid, uid


class ServiceServer(socketserver.UnixStreamServer):
    context: Any = None  # what the handlers serve from (a Redeemer, a Controller)


class UnixService:
    """The socket at `path`, served by `handler`; a context manager."""

    def __init__(
        self,
        path: Path,
        handler: type[socketserver.BaseRequestHandler],
        context: Any,
        name: str,
        mode: int,
        gid: int | None = None,
        error_class: type[AgentError] = AgentError,
    ) -> None:
        self.path = path
        self.handler = handler
        self.context = context
        self.name = name
        self.mode = mode
        self.gid = gid
        self.error_class = error_class
        self._server: ServiceServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> UnixService:
        try:
            self.path.unlink()  # a socket left by a process that was killed
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self.error_class(f"cannot replace {self.path}: {e.strerror}") from e
        try:
            server = ServiceServer(str(self.path), self.handler)
            if self.gid is not None and os.geteuid() == 0:
                os.chown(self.path, 0, self.gid)
            os.chmod(self.path, self.mode)
        except OSError as e:
            raise self.error_class(f"cannot listen on {self.path}: {e.strerror}") from e
        server.context = self.context
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self.path.unlink()
