"""One line on the terminal of the person at a session's process, opened safely.

Root opens the terminal here, so no path string from /proc is trusted:
`readlink /proc/PID/fd/0` is text built from the file's name, and a user can
make a name under /dev say anything (issue 14, finding 2). A terminal is
opened only when its path is a tty path, is not a symlink, and is the very
character device (st_rdev, from stat of the process's own fds) the process
holds on its stdin or stdout; fstat of what was opened checks again. This is
the tracer's safe opener (tracer/terminals.py on the tracer branch) in small:
use that one once it is on main.
"""

from __future__ import annotations

import os
import re
import stat

TTY_RE = re.compile(r"/dev/(pts/\d+|tty[A-Za-z0-9]+)")
_OPEN_FLAGS = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW


def _held(pid: int) -> set[int]:
    held = set()
    for fd in (0, 1):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")  # the open file itself
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            held.add(st.st_rdev)
    return held


def _is_held(path: str, held: set[int]) -> bool:
    if not TTY_RE.fullmatch(path):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev in held


def write_line(pid: int, tty: str | None, line: str) -> bool:
    """`line` on `pid`'s terminal (`tty`, else the one on its stdin or stdout)."""
    held = _held(pid)
    candidates = [tty] if tty else []
    for fd in (0, 1):
        try:
            candidates.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    path = next((p for p in candidates if p and _is_held(p, held)), None)
    if path is None:
        return False
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not (stat.S_ISCHR(st.st_mode) and st.st_rdev in held and os.isatty(fd)):
            return False
        printable = "".join(c for c in line if c.isprintable())
        os.write(fd, f"\r\n{printable}\r\n".encode())
        return True
    except OSError:
        return False  # a hung-up or full terminal
    finally:
        os.close(fd)
