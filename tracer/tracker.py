"""One run of scripts/session_tracker.sh, and the strace it becomes.

The agent reads what the start line needs from /proc itself (it has most of
it from discovery already) and hands it to the script, which then forks
nothing before it execs strace: a burst of new sessions costs a bash start
and an exec each. The script stays the one place holding the strace command
line and the lifecycle lines; under sudo it still reads /proc on its own.

Each tracker runs in its own session and process group, so stopping it stops
whatever it started; its exit is learned from a pidfd (readable once the
process has exited), never by polling.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import re
import select
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tracer.discovery import TaggedSsh
from tracer.procfs import started_at
from tracer.terminals import ssh_tty, terminal_size

CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
# Until strace has attached, every key the person types is at risk: the
# threads that find and start trackers run at this nice value, and so do the
# trackers they start (a child inherits it), until the attach is confirmed;
# then strace goes back to 0, where ssh itself runs.
URGENT_NICE = -5
_USER_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")

# session_tracker.sh exit codes (see its header), as reasons.
TRACKER_EXITS = {
    2: "session_tracker.sh refused its arguments",
    3: "ssh has no terminal on stdin or stdout",
    4: "ssh is already traced by another tracer",
    5: "cannot write the session log",
    6: "strace is not installed",
}
ALREADY_TRACED = TRACKER_EXITS[4]


def pidfd_exited(pidfd: int) -> bool:
    """Whether the process behind this pidfd has exited (pidfd is readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


@dataclass
class Tracker:
    """A session_tracker.sh we started (popen), or a strace we adopted."""

    popen: subprocess.Popen[bytes] | None  # None: adopted, watched by its pidfd
    tracer_pid: int
    pidfd: int
    launched_at: float = 0.0  # monotonic
    record_only: bool = False  # writes the start line of a refused session

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return not pidfd_exited(self.pidfd)

    def exit_reason(self) -> str:
        if self.popen is None or self.popen.returncode is None:
            return f"strace {self.tracer_pid} is gone"
        rc = self.popen.returncode
        if rc < 0 or rc > 128:  # strace exits 128 + n on a fatal signal n
            return f"strace was killed by {signal.Signals(abs(rc) % 128).name}"
        if rc in TRACKER_EXITS:
            return TRACKER_EXITS[rc]
        if rc == 1:
            return "strace could not attach (ptrace refused)"
        if rc in (126, 127):
            return "strace is not installed or cannot run"
        return f"strace exited {rc}"

    def signal(self, sig: signal.Signals) -> None:
        """`sig` to the tracker's process group (what it started, too).

        Only while its pidfd says it has not exited: then its pid is still
        its own (a pid is reused only once its process is gone and reaped).
        """
        if self.pidfd < 0 or pidfd_exited(self.pidfd):
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.tracer_pid) == self.tracer_pid:
                os.killpg(self.tracer_pid, sig)
            else:
                signal.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Reap it if it is ours, and let go of its pidfd."""
        if self.popen is not None:
            self.popen.poll()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _user_name(uid: int) -> str:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""
    return name if _USER_RE.fullmatch(name) else ""


def tracker_argv(
    script: Path, data_dir: Path, ssh: TaggedSsh, boot_time: float, record_only: bool
) -> list[str]:
    """The script's command line, with the facts of its start line."""
    tty = ssh_tty(ssh.pid) or ""
    rows, cols = terminal_size(ssh.pid, tty) if tty else (0, 0)
    argv = [
        str(script),
        "--data-dir",
        str(data_dir),
        "--pid",
        str(ssh.pid),
        "--start-ticks",
        str(ssh.start_ticks),
        "--started-at",
        f"{started_at(ssh.start_ticks, boot_time):.2f}",
        "--uid",
        str(ssh.uid),
        "--user",
        _user_name(ssh.uid),
        "--tty",
        tty,
        "--size",
        f"{rows}x{cols}",
        "--ssh-version",
        ssh.ssh_version or "",
        "--argv-b64",
        base64.b64encode(ssh.argv).decode("ascii"),
    ]
    if record_only:
        argv.append("--record-only")
    return [*argv, ssh.tag]


def launch(argv: list[str], now: float, record_only: bool = False) -> Tracker:
    """Start the script in its own session; OSError if it cannot run."""
    popen = subprocess.Popen(
        argv,
        env=CHILD_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    pidfd = open_pidfd(popen.pid)
    if pidfd is None:  # cannot be: it is our unreaped child
        raise OSError(f"no pidfd for tracker {popen.pid}")
    return Tracker(popen, popen.pid, pidfd, now, record_only)


def adopt(tracer_pid: int, now: float) -> Tracker | None:
    pidfd = open_pidfd(tracer_pid)
    return None if pidfd is None else Tracker(None, tracer_pid, pidfd, now)
