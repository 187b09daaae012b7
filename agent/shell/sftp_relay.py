"""The SFTP relay's logic: the client's requests to one granted host, watched.

`sftp zxy@bastion` and `scp` (OpenSSH >= 9.0 speaks SFTP for it) reach
audit-shell as the sftp subsystem. The client sees a virtual tree: `/` holds
one directory per host the person may transfer with (`web1`, or
`deploy@web1` when several accounts are granted there), and `/web1/etc/x`
is `/etc/x` on web1 (`/web1/~/x` is `x` in the account's home). Requests
under a host go to that host's own sftp-server over audit-shell's ssh
connection, with the path rewritten and the handle wrapped; everything else
is answered here. One session uses one host: the first it touches.

Every file opened for reading or writing is followed to its close: bytes
moved, a SHA-256 of them when they came in order, the grant's direction and
size limit enforced before a byte is relayed. Each becomes a `Transfer`
(parsers/events.py). Pure: packets in, packets out; the I/O loop is in
agent/shell/transfers.py.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

from agent.shell import sftp_wire as w
from agent.shell.file_watch import WatchedFile, direction_of, open_flags
from agent.shell.transfer_paths import Route, host_path, resolve
from parsers.events import Transfer, TransferDirection, TransferOutcome

# Extensions offered to the client; a host without one answers OP_UNSUPPORTED.
EXTENSIONS = (
    (b"posix-rename@openssh.com", b"1"),
    (b"statvfs@openssh.com", b"2"),
    (b"fstatvfs@openssh.com", b"2"),
    (b"fsync@openssh.com", b"1"),
    (b"limits@openssh.com", b"1"),
    (b"expand-path@openssh.com", b"1"),
)
MAX_READ_WRITE_BYTES = w.MAX_PACKET_BYTES - 2048
MAX_OPEN_HANDLES = 64
PATH_OPS = {
    w.Op.OPEN,
    w.Op.LSTAT,
    w.Op.SETSTAT,
    w.Op.OPENDIR,
    w.Op.REMOVE,
    w.Op.MKDIR,
    w.Op.RMDIR,
    w.Op.REALPATH,
    w.Op.STAT,
    w.Op.READLINK,
}
HANDLE_OPS = {
    w.Op.CLOSE,
    w.Op.READ,
    w.Op.WRITE,
    w.Op.FSTAT,
    w.Op.FSETSTAT,
    w.Op.READDIR,
}
CHANGING_OPS = {w.Op.SETSTAT, w.Op.REMOVE, w.Op.MKDIR, w.Op.RMDIR, w.Op.RENAME}
_VIRTUAL, _REMOTE = b"V", b"R"  # handle prefixes: a listing of ours, the host's
_DIR_ATTRS = w.Attrs(size=0, permissions=stat.S_IFDIR | 0o755)


@dataclass
class _Pending:
    op: int
    handle: bytes = b""
    offset: int = 0
    opening: WatchedFile | None = None
    private: bool = False  # our own request (a partial upload's removal)


class SftpRelay:
    """One client's SFTP session through the bastion.

    `client(packet)` and `host(packet)` return what to send where: a list of
    (destination, packet), destination None for the client, else the route.
    `transfers` collects the records of files that are done.
    """

    def __init__(self, routes: list[Route], clock: Callable[[], float]) -> None:
        self.routes = {r.label: r for r in routes}
        self.clock = clock
        self.route: Route | None = None  # the host this session uses, once chosen
        self.connected = False  # the host answered our INIT
        self.queued: list[w.Packet] = []  # for the host, until it answered
        self.transfers: list[Transfer] = []
        self._pending: dict[int, _Pending] = {}
        self._files: dict[bytes, WatchedFile] = {}  # by the host's handle
        self._listings: dict[bytes, list[Route] | None] = {}
        self._next_listing = 0
        self._private_ids = 0xFFFFFFFF

    # -- from the client -------------------------------------------------

    def client(self, p: w.Packet) -> list[tuple[Route | None, w.Packet]]:
        if p.op == w.Op.INIT:
            return [(None, w.version_reply(list(EXTENSIONS)))]
        try:
            rid = p.request_id
            return self._request(p, rid)
        except w.WireError:
            return [
                (None, w.status(_id_or_zero(p), w.Status.BAD_MESSAGE, "bad request"))
            ]

    def _request(self, p: w.Packet, rid: int) -> list[tuple[Route | None, w.Packet]]:
        r = w.Reader(p.payload)
        r.u32()
        if p.op in PATH_OPS:
            return self._path_request(p, rid, r.string())
        if p.op in HANDLE_OPS:
            return self._handle_request(p, rid, r.string(), r)
        if p.op == w.Op.RENAME:
            return self._rename(p, rid, r.string(), r.string())
        if p.op == w.Op.SYMLINK:
            return self._deny(
                rid, w.Status.OP_UNSUPPORTED, "no symlinks through the bastion"
            )
        if p.op == w.Op.EXTENDED:
            return self._extended(p, rid, r.string(), r)
        return self._deny(rid, w.Status.OP_UNSUPPORTED, "not supported")

    def _path_request(
        self, p: w.Packet, rid: int, raw: bytes
    ) -> list[tuple[Route | None, w.Packet]]:
        name = raw.decode("utf-8", "surrogateescape")
        where = resolve(name, allow_up=p.op in (w.Op.REALPATH,))
        if isinstance(where, str):
            if p.op == w.Op.OPEN:
                self._refused(p, name, where)
            return self._deny(rid, w.Status.PERMISSION_DENIED, where)
        label, rest = where
        if label is None:  # the virtual root itself
            return self._root_request(p, rid)
        route = self.routes.get(label)
        if route is None:
            return self._deny(
                rid, w.Status.NO_SUCH_FILE, f"no host {label} for you here"
            )
        if p.op == w.Op.REALPATH and rest is None:
            return [(None, w.name_reply(rid, [(f"/{label}", f"/{label}", _DIR_ATTRS)]))]
        path = host_path(rest)
        if p.op == w.Op.OPEN:
            opening = self._opening(p, route, path, name)
            if isinstance(opening, str):
                return self._deny(rid, w.Status.PERMISSION_DENIED, opening)
            self._pending[rid] = _Pending(p.op, opening=opening)
        elif p.op in CHANGING_OPS and not route.target.transfers.allows("upload"):
            return self._deny(
                rid, w.Status.PERMISSION_DENIED, "read only: no uploads granted"
            )
        else:
            self._pending[rid] = _Pending(p.op)
        return self._to_host(
            route, w.with_path(p, path.encode("utf-8", "surrogateescape"))
        )

    def _opening(
        self, p: w.Packet, route: Route, path: str, name: str
    ) -> WatchedFile | str:
        """The file an OPEN would move, or why it is refused (recorded)."""
        direction = direction_of(p)
        rights = route.target.transfers
        if self.route is None:
            self.route = route  # refused or not, the session is on this host now
        why = ""
        if not rights.allows(direction):
            why = f"{direction}s to or from {route.label} are not granted"
        elif open_flags(p) & w.FXF_READ and not rights.allows("download"):
            why = f"downloads from {route.label} are not granted"
        if why:
            refused = WatchedFile(direction, path, name, self.clock(), 0)
            self._record(refused, TransferOutcome.REFUSED, why)
            return why
        limit = route.target.max_transfer_bytes
        return WatchedFile(direction, path, name, self.clock(), limit)

    def _root_request(
        self, p: w.Packet, rid: int
    ) -> list[tuple[Route | None, w.Packet]]:
        if p.op == w.Op.REALPATH:
            return [(None, w.name_reply(rid, [("/", "/", _DIR_ATTRS)]))]
        if p.op in (w.Op.STAT, w.Op.LSTAT):
            return [(None, w.attrs_reply(rid, _DIR_ATTRS))]
        if p.op == w.Op.OPENDIR:
            handle = _VIRTUAL + str(self._next_listing).encode()
            self._next_listing += 1
            self._listings[handle] = sorted(self.routes.values(), key=lambda r: r.label)
            return [(None, w.handle_reply(rid, handle))]
        return self._deny(
            rid, w.Status.PERMISSION_DENIED, "pick a host first: /HOST/path"
        )

    def _handle_request(
        self, p: w.Packet, rid: int, handle: bytes, r: w.Reader
    ) -> list[tuple[Route | None, w.Packet]]:
        if handle in self._listings:
            return self._listing(p, rid, handle)
        if not handle.startswith(_REMOTE) or self.route is None:
            return self._deny(rid, w.Status.FAILURE, "no such handle")
        inner = handle[1:]
        f = self._files.get(inner)
        pending = _Pending(p.op, inner)
        if f is not None and p.op == w.Op.WRITE:
            offset, data = r.u64(), r.string()
            if f.refused or offset + len(data) > f.limit:
                f.refused = (
                    f.refused or f"over the limit of {f.limit} bytes for one file"
                )
                return self._deny(rid, w.Status.FAILURE, f.refused)
            f.took(offset, data)
        elif f is not None and p.op == w.Op.READ:
            pending.offset = r.u64()
        self._pending[rid] = pending
        return self._to_host(self.route, w.with_handle(p, inner))

    def _listing(
        self, p: w.Packet, rid: int, handle: bytes
    ) -> list[tuple[Route | None, w.Packet]]:
        if p.op == w.Op.CLOSE:
            del self._listings[handle]
            return [(None, w.status(rid, w.Status.OK, ""))]
        if p.op == w.Op.READDIR:
            routes = self._listings[handle]
            self._listings[handle] = None
            if not routes:
                return [(None, w.status(rid, w.Status.EOF, ""))]
            names = [
                (r.label, f"drwxr-xr-x 1 - - 0 - {r.label}", _DIR_ATTRS) for r in routes
            ]
            return [(None, w.name_reply(rid, names))]
        if p.op == w.Op.FSTAT:
            return [(None, w.attrs_reply(rid, _DIR_ATTRS))]
        return self._deny(
            rid, w.Status.PERMISSION_DENIED, "the list of hosts is read only"
        )

    def _rename(
        self, p: w.Packet, rid: int, old: bytes, new: bytes
    ) -> list[tuple[Route | None, w.Packet]]:
        a = resolve(old.decode("utf-8", "surrogateescape"), allow_up=False)
        b = resolve(new.decode("utf-8", "surrogateescape"), allow_up=False)
        if isinstance(a, str) or isinstance(b, str) or a[0] is None or a[0] != b[0]:
            return self._deny(
                rid, w.Status.PERMISSION_DENIED, "rename within one host only"
            )
        route = self.routes.get(a[0])
        if route is None or not route.target.transfers.allows("upload"):
            return self._deny(
                rid, w.Status.PERMISSION_DENIED, "read only: no uploads granted"
            )
        body = w.u32(rid) + w.string(host_path(a[1])) + w.string(host_path(b[1]))
        self._pending[rid] = _Pending(p.op)
        return self._to_host(route, w.Packet(p.op, body))

    def _extended(
        self, p: w.Packet, rid: int, name: bytes, r: w.Reader
    ) -> list[tuple[Route | None, w.Packet]]:
        if name == b"limits@openssh.com":
            body = w.u32(rid) + w.u64(w.MAX_PACKET_BYTES)
            body += w.u64(MAX_READ_WRITE_BYTES) * 2 + w.u64(MAX_OPEN_HANDLES)
            return [(None, w.Packet(w.Op.EXTENDED_REPLY, body))]
        if name in (b"statvfs@openssh.com", b"expand-path@openssh.com"):
            return self._extended_path(rid, name, r.string())
        if name in (b"fstatvfs@openssh.com", b"fsync@openssh.com"):
            handle = r.string()
            if not handle.startswith(_REMOTE) or self.route is None:
                return self._deny(rid, w.Status.FAILURE, "no such handle")
            self._pending[rid] = _Pending(w.Op.EXTENDED)
            body = w.u32(rid) + w.string(name) + w.string(handle[1:]) + r.rest()
            return self._to_host(self.route, w.Packet(p.op, body))
        if name == b"posix-rename@openssh.com":
            return self._rename(p, rid, r.string(), r.string())
        return self._deny(
            rid,
            w.Status.OP_UNSUPPORTED,
            f"{name.decode('ascii', 'replace')} is not relayed",
        )

    def _extended_path(
        self, rid: int, name: bytes, raw: bytes
    ) -> list[tuple[Route | None, w.Packet]]:
        """statvfs and expand-path: a path request in an extension's clothes."""
        expand = name == b"expand-path@openssh.com"
        where = resolve(raw.decode("utf-8", "surrogateescape"), allow_up=expand)
        if isinstance(where, str):
            return self._deny(rid, w.Status.PERMISSION_DENIED, where)
        label, rest = where
        route = self.routes.get(label) if label is not None else None
        if route is None or (expand and rest is None):
            if expand and (label is None or route is not None):
                shown = f"/{label}" if label is not None else "/"
                return [(None, w.name_reply(rid, [(shown, shown, _DIR_ATTRS)]))]
            return self._deny(
                rid, w.Status.NO_SUCH_FILE, "pick a host first: /HOST/path"
            )
        self._pending[rid] = _Pending(w.Op.REALPATH if expand else w.Op.EXTENDED)
        body = w.u32(rid) + w.string(name) + w.string(host_path(rest))
        return self._to_host(route, w.Packet(w.Op.EXTENDED, body))

    # -- from the host ---------------------------------------------------

    def host(self, p: w.Packet) -> list[tuple[Route | None, w.Packet]]:
        if p.op == w.Op.VERSION:
            self.connected = True
            queued, self.queued = self.queued, []
            assert self.route is not None
            return [(self.route, q) for q in queued]
        try:
            rid = p.request_id
        except w.WireError:
            return []
        pending = self._pending.pop(rid, None)
        if pending is None:
            return [(None, p)]
        if pending.private:
            return []  # the reply to a request of ours, not the client's
        if p.op == w.Op.STATUS:
            return self._status(p, rid, pending)
        return [(None, self._reply(p, rid, pending))]

    def _reply(self, p: w.Packet, rid: int, pending: _Pending) -> w.Packet:
        if p.op == w.Op.HANDLE and pending.op in (w.Op.OPEN, w.Op.OPENDIR):
            r = w.Reader(p.payload)
            r.u32()
            handle = r.string()
            if pending.opening is not None:
                self._files[handle] = pending.opening
            return w.handle_reply(rid, _REMOTE + handle)
        if p.op == w.Op.NAME and pending.op == w.Op.REALPATH:
            return self._realpath_reply(p, rid)
        if p.op == w.Op.DATA and pending.op == w.Op.READ:
            f = self._files.get(pending.handle)
            if f is not None:
                r = w.Reader(p.payload)
                r.u32()
                data = r.string()
                if f.refused or pending.offset + len(data) > f.limit:
                    f.refused = (
                        f.refused or f"over the limit of {f.limit} bytes for one file"
                    )
                    return w.status(rid, w.Status.FAILURE, f.refused)
                f.took(pending.offset, data)
        return p

    def _status(
        self, p: w.Packet, rid: int, pending: _Pending
    ) -> list[tuple[Route | None, w.Packet]]:
        _, code, message = w.parse_status(p)
        if pending.op == w.Op.OPEN and pending.opening is not None:
            if code != w.Status.OK:
                why = message or f"status {code}"
                self._record(pending.opening, TransferOutcome.FAILED, why)
            return [(None, p)]
        f = self._files.get(pending.handle)
        if f is None:
            return [(None, p)]
        if pending.op == w.Op.CLOSE:
            del self._files[pending.handle]
            if f.refused:
                return self._refused_close(f, rid)
            if f.failed or code != w.Status.OK:
                self._record(f, TransferOutcome.FAILED, f.failed or message)
            else:
                self._record(f, TransferOutcome.COMPLETE, "")
            return [(None, p)]
        if f.refused:
            # OpenSSH's client reports only the last status of an upload: every
            # write after the refusal fails too, or an earlier OK would hide it.
            return [(None, w.status(rid, w.Status.FAILURE, f.refused))]
        if code not in (w.Status.OK, w.Status.EOF) and not f.failed:
            f.failed = message or f"status {code}"
        return [(None, p)]

    def _refused_close(
        self, f: WatchedFile, rid: int
    ) -> list[tuple[Route | None, w.Packet]]:
        """A refused file is closed: record it; an upload's part is removed."""
        out: list[tuple[Route | None, w.Packet]] = [
            (None, w.status(rid, w.Status.FAILURE, f.refused))
        ]
        reason = f.refused
        if f.direction == TransferDirection.UPLOAD and self.route is not None:
            own = self._own_id()
            self._pending[own] = _Pending(w.Op.REMOVE, private=True)
            remove = w.Packet(w.Op.REMOVE, w.u32(own) + w.string(f.path))
            out.insert(0, (self.route, remove))
            reason += "; the part written was removed"
        self._record(f, TransferOutcome.REFUSED, reason)
        return out

    def _own_id(self) -> int:
        """A request id of ours: from the top of the range, away from clients'."""
        self._private_ids -= 1
        return self._private_ids

    def _realpath_reply(self, p: w.Packet, rid: int) -> w.Packet:
        assert self.route is not None
        r = w.Reader(p.payload)
        r.u32()
        if r.u32() != 1:
            return p
        path = r.string().decode("utf-8", "surrogateescape")
        virtual = f"/{self.route.label}" + (path if path != "/" else "")
        return w.name_reply(rid, [(virtual, virtual, _DIR_ATTRS)])

    # -- the end ---------------------------------------------------------

    def finish(self, why: str) -> None:
        """The session ended: files still open were cut."""
        for f in self._files.values():
            self._record(f, TransferOutcome.CUT, why)
        self._files.clear()

    def take_transfers(self) -> list[Transfer]:
        done, self.transfers = self.transfers, []
        return done

    # -- helpers ---------------------------------------------------------

    def _to_host(
        self, route: Route, p: w.Packet
    ) -> list[tuple[Route | None, w.Packet]]:
        if self.route is None:
            self.route = route
        elif route is not self.route:
            self._pending.pop(p.request_id, None)
            return self._deny(
                p.request_id,
                w.Status.PERMISSION_DENIED,
                f"this session is on {self.route.label}; "
                f"connect again for {route.label}",
            )
        if not self.connected:
            self.queued.append(p)
            return []
        return [(route, p)]

    def _refused(self, p: w.Packet, name: str, why: str) -> None:
        direction = direction_of(p)
        refused = WatchedFile(direction, name, name, self.clock(), 0)
        self._record(refused, TransferOutcome.REFUSED, why)

    def _record(self, f: WatchedFile, outcome: TransferOutcome, reason: str) -> None:
        self.transfers.append(f.record(self.clock(), outcome, reason))

    @staticmethod
    def _deny(
        rid: int, code: w.Status, message: str
    ) -> list[tuple[Route | None, w.Packet]]:
        return [(None, w.status(rid, code, message))]


def _id_or_zero(p: w.Packet) -> int:
    try:
        return p.request_id
    except w.WireError:
        return 0
