"""The ssh's terminal, verified before root opens it (tracer/terminals.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

from tracer.terminals import notify_terminal, open_terminal, ssh_tty, terminal_size


def test_only_the_device_the_process_holds_is_opened(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    other_master, other_slave = pty.openpty()
    tty = os.ttyname(slave)
    held = subprocess.Popen(["sleep", "30"], stdin=slave, stdout=slave)
    try:
        assert ssh_tty(held.pid) == tty
        fd = open_terminal(held.pid, tty, os.O_WRONLY)
        assert fd is not None
        os.close(fd)
        # Another real terminal, a symlink to the right one, a regular file:
        # none is the device that process holds.
        assert open_terminal(held.pid, os.ttyname(other_slave), os.O_WRONLY) is None
        link = tmp_path / "tty"
        link.symlink_to(tty)
        assert open_terminal(held.pid, str(link), os.O_WRONLY) is None
        plain = tmp_path / "plain"
        plain.write_bytes(b"kept")
        assert open_terminal(held.pid, str(plain), os.O_WRONLY) is None
        # Controls in the line (an auditor's reason, a rule's message) are left out.
        assert notify_terminal(held.pid, "hel\x1b]0;x\x07lo", tty)
        shown = os.read(master, 100)
        assert b"hel]0;xlo" in shown and b"\x1b" not in shown and b"\x07" not in shown
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        assert terminal_size(held.pid, tty) == (30, 100)
    finally:
        held.kill()
        held.wait()
        for fd in (master, slave, other_master, other_slave):
            os.close(fd)


def test_a_process_without_a_terminal_has_none(tmp_path: Path) -> None:
    plain = tmp_path / "in"
    plain.write_bytes(b"")
    with open(plain, "rb") as stdin:
        held = subprocess.Popen(["sleep", "30"], stdin=stdin, stdout=subprocess.DEVNULL)
    try:
        assert ssh_tty(held.pid) is None
        assert not notify_terminal(held.pid, "nowhere")  # nothing to write to
        assert plain.read_bytes() == b""
    finally:
        held.kill()
        held.wait()
