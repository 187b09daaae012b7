"""The terminal of the person at an ssh: found, verified, written to.

Root opens a terminal here, so no path string from /proc is ever trusted:
`readlink /proc/PID/fd/0` is text the kernel builds from the file's name,
and a user can make it say anything under /dev (a deleted file shows as
`NAME (deleted)`, and a symlink may then be planted under exactly that name).
A terminal is opened only when its path is a tty path, is not a symlink, and
is the very character device (st_rdev, through stat of the fd itself) that
the ssh holds on its stdin or stdout; fstat of what was opened checks again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import stat
import struct
import termios

from tracer.procfs import fd_device, read_uids

# As scripts/session_tracker.sh records it: /dev/tty itself is where ssh
# asks for a password, never the session's terminal.
TTY_RE = re.compile(r"/dev/(pts/\d+|tty[A-Za-z0-9]+)")
_OPEN_FLAGS = os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW


def held_terminals(pid: int) -> set[int]:
    """Devices (st_rdev) of the character devices on `pid`'s fds 0 and 1."""
    return {d for fd in (0, 1) if (d := fd_device(pid, fd)) is not None}


def ssh_tty(pid: int) -> str | None:
    """The terminal on the ssh's stdin or stdout, verified; None if it has none."""
    held = held_terminals(pid)
    for fd in (0, 1):
        try:
            path = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if _is_device(path, held):
            return path
    return None


def _is_device(path: str, held: set[int]) -> bool:
    if not TTY_RE.fullmatch(path):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev in held


def open_terminal(pid: int, tty: str, flags: int) -> int | None:
    """An fd on `tty`, only if it is the terminal `pid` holds (module doc)."""
    held = held_terminals(pid)
    if not _is_device(tty, held):
        return None
    try:
        fd = os.open(tty, flags | _OPEN_FLAGS)
    except OSError:
        return None
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev in held and os.isatty(fd):
        return fd
    os.close(fd)
    return None


def notify_terminal(ssh_pid: int, message: str, tty: str | None = None) -> bool:
    """One line on the terminal of the person at this ssh (its recorded tty).

    Whether it was written; controls in `message` are left out.
    """
    tty = tty or ssh_tty(ssh_pid)
    fd = open_terminal(ssh_pid, tty, os.O_WRONLY) if tty else None
    if fd is None:
        return False
    printable = "".join(c for c in message if c.isprintable())
    try:
        os.write(fd, f"\r\n{printable}\r\n".encode())
        return True
    except OSError:
        return False  # a hung-up or full terminal: the verdict stands without it
    finally:
        os.close(fd)


def terminal_size(ssh_pid: int, tty: str) -> tuple[int, int]:
    """Rows and columns of the ssh's terminal now; (0, 0) if unknown.

    ssh asked for it (TIOCGWINSZ) when it started, maybe before strace was
    there to see the answer.
    """
    fd = open_terminal(ssh_pid, tty, os.O_RDONLY)
    if fd is None:
        return 0, 0
    try:
        rows, cols, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))
        )
        return rows, cols
    except OSError:
        return 0, 0
    finally:
        os.close(fd)


# -- a ControlMaster serving the terminal ----------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
UDIAG_SHOW_PEER = 0x4
UNIX_DIAG_PEER = 2
NLM_F_REQUEST = 0x1
_SOCKET_RE = re.compile(r"socket:\[(\d+)\]")


def unix_peers(inodes: set[int]) -> set[int]:
    """The inodes of the other ends of these connected unix sockets.

    sock_diag (linux/unix_diag.h): one exact lookup per socket, asking for
    UNIX_DIAG_PEER; sockets that are not unix ones are simply not found.
    """
    peers: set[int] = set()
    if not inodes:
        return peers
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError:
        return peers
    with sock:
        sock.settimeout(1.0)
        for seq, ino in enumerate(sorted(inodes), 1):
            # unix_diag_req: family, protocol, pad, states, ino, show, cookie[2];
            # a cookie of ~0 asks for no cookie check.
            req = struct.pack(
                "=BBHIIIII", socket.AF_UNIX, 0, 0, ~0 & 0xFFFFFFFF, ino,
                UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF,
            )  # fmt: skip
            msg = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 1, seq, 0)
            try:
                sock.send(msg + req)
                data = sock.recv(65536)
            except OSError:
                continue
            length, kind = struct.unpack_from("=IH", data)
            if kind != SOCK_DIAG_BY_FAMILY:
                continue  # NLMSG_ERROR: no such unix socket
            at = 16 + 16  # nlmsghdr, unix_diag_msg
            while at + 4 <= min(length, len(data)):
                size, attr = struct.unpack_from("=HH", data, at)
                if attr == UNIX_DIAG_PEER and size >= 8:
                    peers.add(struct.unpack_from("=I", data, at + 4)[0])
                if size < 4:
                    break
                at += (size + 3) & ~3
    return peers


def _fd_links(pid: int) -> dict[int, str]:
    links = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            links[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return links


def _descendants(pid: int) -> set[int]:
    """Children, grandchildren... of `pid` (/proc/PID/task/*/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def served_elsewhere(ssh_pid: int, ssh_uid: int) -> int | None:
    """The pid of another process of the same user holding this ssh's terminal.

    A ControlMaster client passes its terminal fds to the master over the
    control socket (SCM_RIGHTS); from then on the master reads and writes the
    terminal and the client only waits, so tracing the client sees nothing.
    The master is whoever holds the other end of one of the client's unix
    sockets (the client stays connected until the session ends) and the
    terminal above fds 0-2, where received fds land; whatever its binary is
    called. An ssh with no connected unix socket is served by no one, and
    costs no walk of the process table.
    """
    tty = ssh_tty(ssh_pid)
    if tty is None:
        return None
    own = _fd_links(ssh_pid)
    mine = {
        int(m.group(1)) for link in own.values() if (m := _SOCKET_RE.fullmatch(link))
    }
    peers = {f"socket:[{ino}]" for ino in unix_peers(mine)}
    if not peers:
        return None
    skip = {ssh_pid, *_descendants(ssh_pid)}  # ProxyJump's `ssh -W` holds the tty
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        pid = int(name)
        try:
            if os.stat(f"/proc/{pid}").st_uid != ssh_uid:
                continue
        except OSError:
            continue
        links = _fd_links(pid)
        if peers.isdisjoint(links.values()):
            continue
        if any(fd > 2 and link == tty for fd, link in links.items()):
            uids = read_uids(pid)
            if uids is not None and uids[0] == ssh_uid:
                return pid
    return None
