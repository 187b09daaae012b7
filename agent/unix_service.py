"""A unix socket served by owned threads.

audit-web's token redemption (web/redeem.py) and the daemon's control socket
(agent/daemon/control.py) are both this: a stale socket of a killed process
replaced, the file's mode set, the kernel asked who is calling
(`peer_uid`, SO_PEERCRED), and the threads stopped and joined on exit. The
control socket serves one request at a time; ThreadedServiceServer (the
redemption's) checks the caller before reading a byte and gives each
request a thread of its own, so that a slow caller holds up nobody else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from agent import AgentError

log = logging.getLogger(__name__)

MAX_REQUESTS = 8  # served at once by a ThreadedServiceServer; more are refused
REFUSAL_READ_BYTES = 8192  # what a refused caller already sent is read first

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """The calling process's pid and uid, as the kernel says."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _ = _UCRED.unpack(creds)
    return pid, uid


class ServiceServer(socketserver.UnixStreamServer):
    context: Any = None  # what the handlers serve from (a Redeemer, a Controller)


class ThreadedServiceServer(socketserver.ThreadingMixIn, ServiceServer):
    """A thread per request, MAX_REQUESTS at once; the caller checked first.

    `context.refuse(uid)` runs in the accepting thread before a byte is read:
    the reply for a caller who is not served (sent without waiting on it),
    else None. server_close() joins the request threads (block_on_close).
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler]):
        super().__init__(path, handler)
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        _, uid = peer_credentials(request)
        refusal = self.context.refuse(uid)
        if refusal is None and self._slots.acquire(blocking=False):
            return True
        if refusal is None:
            log.warning("%d requests at once; refused one", MAX_REQUESTS)
            refusal = b'{"ok": false, "message": "busy; try again"}\n'
        with contextlib.suppress(OSError):
            request.setblocking(False)
            # Closing on unread data would reset the caller before it reads.
            with contextlib.suppress(BlockingIOError):
                request.recv(REFUSAL_READ_BYTES)
            request.send(refusal)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


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
        server_class: type[ServiceServer] = ServiceServer,
    ) -> None:
        self.path = path
        self.handler = handler
        self.context = context
        self.name = name
        self.mode = mode
        self.gid = gid
        self.error_class = error_class
        self.server_class = server_class
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
            server = self.server_class(str(self.path), self.handler)
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
