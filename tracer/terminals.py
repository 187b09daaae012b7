"""The terminal of the person at an ssh: who else serves it, a line written to it."""

from __future__ import annotations

import os

import psutil

from tracer.discovery import SSH_NAMES, TaggedSsh


def served_elsewhere(ssh: TaggedSsh) -> int | None:
    """The pid of another ssh of the same user holding this ssh's terminal.

    A ControlMaster client passes its terminal fds to the master over the
    control socket (SCM_RIGHTS); from then on the master reads and writes the
    terminal and the client only waits, so tracing the client sees nothing.
    """
    try:
        tty = os.readlink(f"/proc/{ssh.pid}/fd/0")
    except OSError:
        return None
    if not tty.startswith("/dev/"):
        return None
    try:
        own = {p.pid for p in psutil.Process(ssh.pid).children(recursive=True)}
    except psutil.Error:
        return None
    for proc in psutil.process_iter(["pid", "name", "uids"]):
        info = proc.info
        pid = info["pid"]
        if pid == ssh.pid or pid in own or info["name"] not in SSH_NAMES:
            continue  # ProxyJump's `ssh -W` child holds the tty as stderr
        if info["uids"] is None or info["uids"].real != ssh.uid:
            continue
        try:
            # Received fds land above 0-2; an ssh merely started from the
            # same shell holds the terminal as 0, 1 or 2 only.
            fds = [fd for fd in os.listdir(f"/proc/{pid}/fd") if int(fd) > 2]
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == tty for fd in fds):
                return int(pid)
        except OSError:
            continue
    return None


def notify_terminal(ssh_pid: int, message: str) -> None:
    """One line on the terminal of the person at this ssh."""
    try:
        tty = os.readlink(f"/proc/{ssh_pid}/fd/0")
        if not tty.startswith("/dev/"):
            return
        fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"\r\n{message}\r\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)
