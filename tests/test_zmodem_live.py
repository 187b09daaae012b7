"""ZMODEM in a real traced session: `sz` on the host, `rz` behind the terminal.

A real ssh in a real pty to a real sshd, traced by the real agent; the test's
terminal runs Debian's `rz` when the host's `sz` starts, relaying the pty to
it, as Xshell or SecureCRT would. The file must arrive, its record match it,
the commands around it be exact, and the recording hold one line where the
protocol's bytes went.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.casts import cast_path
from tests import harness
from tests.test_end_to_end import open_session, wait_for_commands

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sz") is None, reason="lrzsz is not installed"),
]


ZFIN = b"**\x18B08"  # a hex header of type 8 (lrzsz's zmodem.h: ZFIN)
OVER_AND_OUT = b"OO"  # the sender's last word, after the receiver's ZFIN


def relay_to_rz(child: object, workdir: Path) -> None:
    """The terminal's side of a download: rz on the pty until it is done."""
    fd = child.child_fd  # type: ignore[attr-defined]
    rz = subprocess.Popen(
        ["rz", "-q", "-y"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    assert rz.stdin is not None and rz.stdout is not None
    # What pexpect had read past the start is rz's too.
    pending = child.buffer  # type: ignore[attr-defined]
    child.buffer = b""  # type: ignore[attr-defined]
    rz.stdin.write(b"**\x18B00" + pending)
    rz.stdin.flush()
    out = rz.stdout.fileno()
    finishing = False  # rz has sent its ZFIN: sz's "OO" ends the session
    while rz.poll() is None:
        ready, _, _ = select.select([fd, out], [], [], 10)
        if not ready:
            break
        if fd in ready:
            data = os.read(fd, 65536)
            if not data:
                break
            over = data.find(OVER_AND_OUT) if finishing else -1
            if over >= 0:
                # What follows "OO" is the shell again (its prompt can come in
                # the same read): the screen's, as a terminal would show it,
                # not rz's. Given to rz, the test waited for a prompt that rz
                # had swallowed (3 runs in 8).
                end = over + len(OVER_AND_OUT)
                data, child.buffer = data[:end], data[end:]  # type: ignore[attr-defined]
            try:
                rz.stdin.write(data)
                rz.stdin.flush()
            except BrokenPipeError:
                break
            if over >= 0:
                rz.stdin.close()
                break
        if out in ready:
            data = os.read(out, 65536)
            if data:
                finishing = finishing or ZFIN in data
                os.write(fd, data)
    # rz's last words (its ZFIN) may still be in the pipe when it exits:
    # without them sz waits, and retries, for a long while.
    while data := os.read(out, 65536):
        os.write(fd, data)
    assert rz.wait(20) == 0


def test_sz_on_the_host_is_a_transfer_and_the_commands_around_it_are_exact(
    running_agent: harness.AgentProcess,
    user: harness.TestUser,
    server: harness.Sshd,
    tmp_path: Path,
) -> None:
    content = os.urandom(150_000) + bytes(range(256)) * 40
    remote = user.home / "report.bin"
    remote.write_bytes(content)
    os.chown(remote, user.uid, -1)
    received = tmp_path / "received"
    received.mkdir()
    tag = "zmodem-live"
    child, _ = open_session(user, server, tag)
    child.send(b"echo before\r")
    child.expect(harness.PROMPT)
    child.send(b"sz report.bin\r")
    child.expect(rb"\*\*\x18B00")
    relay_to_rz(child, received)
    child.expect(harness.PROMPT)
    child.send(b"echo after\r")
    child.expect(harness.PROMPT)
    child.sendeof()
    child.expect(harness.pexpect.EOF)
    assert (received / "report.bin").read_bytes() == content

    data_dir = running_agent.data_dir
    records = wait_for_commands(
        data_dir,
        tag,
        ["echo before", "sz report.bin", "download report.bin", "echo after"],
    )
    (t,) = [r["transfer"] for r in records if r["kind"] == "transfer"]
    assert (t["direction"], t["name"], t["size"], t["outcome"]) == (
        "download",
        "report.bin",
        len(content),
        "complete",
    )
    assert t["sha256"] == hashlib.sha256(content).hexdigest()
    harness.wait_for(lambda: harness.sessions_in(data_dir)[tag].status == "closed")
    lines = cast_path(data_dir, tag).read_text().splitlines()[1:]
    shown = "".join(json.loads(line)[2] for line in lines if json.loads(line)[1] == "o")
    assert "download report.bin: " in shown
    assert "\x18" not in shown  # none of the protocol's bytes
