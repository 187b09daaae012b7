"""ssh in a pty of audit-shell's own, with the user's terminal relayed to it.

Why a relay and not `exec ssh`: audit-shell has to see the user's input to
cut an idle session, write a warning line before any cut, hold the user's keys
back until the agent's strace is on the ssh, and take the user back to the
menu when ssh ends. The agent traces ssh as usual: ssh's stdin and stdout are
the inner pty, which is what session_tracker.sh follows.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import select
import signal
import struct
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

import psutil

from tracer.discovery import read_tracer_pid

READ_BYTES = 65536
AUDIT_POLL_S = 0.05
STOP_STEP_S = 2.0  # SIGHUP, then SIGTERM, then SIGKILL, this far apart
CHILD_SIGNALS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGWINCH,
    signal.SIGCHLD,
    signal.SIGPIPE,
)


class Outcome(enum.Enum):
    EXITED = "exited"  # ssh ended by itself
    IDLE = "idle"  # no input for idle_timeout_s
    TIME_LIMIT = "time-limit"  # the bastion login reached max_session_s
    HANGUP = "hangup"  # the user's connection went away, or SIGTERM
    NOT_AUDITED = "not-audited"  # no strace on ssh within audit_wait_s


@dataclass(frozen=True)
class RelayResult:
    outcome: Outcome
    status: int | None = None  # ssh's exit status, when it exited


class ShellSignals:
    """audit-shell's signal routing, restored on exit.

    Ctrl-C, Ctrl-\\ and Ctrl-Z are ignored outright (the menu also turns ISIG
    off, so they arrive as bytes); SIGHUP and SIGTERM set `hangup`; SIGWINCH
    sets `winch`; every handled signal wakes a select() through `fd`.
    """

    IGNORED = (
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )

    def __init__(self) -> None:
        self.hangup = False
        self.winch = False
        self.fd = -1
        self._write_fd = -1
        self._old: dict[int, object] = {}

    def __enter__(self) -> ShellSignals:
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in self.IGNORED:
            self._old[sig] = signal.signal(sig, signal.SIG_IGN)
        for sig in (signal.SIGHUP, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_hangup)
        self._old[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._on_winch)
        self._old[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._on_child)
        signal.set_wakeup_fd(self._write_fd)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(-1)
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        os.close(self.fd)
        os.close(self._write_fd)

    def renew(self) -> None:
        """In a forked child: a wakeup pipe of its own.

        Shared with the parent, either process could drain the byte that was
        meant to wake the other.
        """
        os.close(self.fd)
        os.close(self._write_fd)
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._write_fd)

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self.hangup = True

    def _on_winch(self, signum: int, frame: FrameType | None) -> None:
        self.winch = True

    def _on_child(self, signum: int, frame: FrameType | None) -> None:
        pass  # the wakeup fd is the point

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 512):
                pass


@dataclass
class Timers:
    """The idle timeout and the login's time limit, with one warning each."""

    idle_timeout_s: float  # 0: none
    warn_before_s: float
    deadline: float | None  # time.monotonic() when the login must end
    last_input: float
    idle_warned: bool = False
    limit_warned: bool = False

    @classmethod
    def starting(
        cls, now: float, idle_timeout_s: float, warn_before_s: float, max_s: float
    ) -> Timers:
        """Timers for a login that starts at `now` (max_s 0: no time limit)."""
        return cls(
            idle_timeout_s=idle_timeout_s,
            warn_before_s=warn_before_s,
            deadline=now + max_s if max_s else None,
            last_input=now,
        )

    def input(self, now: float) -> None:
        self.last_input = now
        self.idle_warned = False

    def check(self, now: float) -> tuple[str | None, Outcome | None]:
        """A warning to show now, or the reason to cut now."""
        if self.deadline is not None:
            left = self.deadline - now
            if left <= 0:
                return None, Outcome.TIME_LIMIT
            if left <= self.warn_before_s and not self.limit_warned:
                self.limit_warned = True
                return f"this login reaches its time limit in {_span(left)}", None
        if self.idle_timeout_s > 0:
            left = self.idle_timeout_s - (now - self.last_input)
            if left <= 0:
                return None, Outcome.IDLE
            if left <= self.warn_before_s and not self.idle_warned:
                self.idle_warned = True
                return f"idle: you will be logged out in {_span(left)}", None
        return None, None

    def next_check_s(self, now: float) -> float:
        """Seconds until check() may have something new to say."""
        moments = []
        if self.deadline is not None:
            moments += [self.deadline - self.warn_before_s, self.deadline]
        if self.idle_timeout_s > 0:
            cut = self.last_input + self.idle_timeout_s
            moments += [cut - self.warn_before_s, cut]
        future = [m - now for m in moments if m > now]
        return max(0.01, min(future, default=3600.0))


def must_end(
    timers: Timers, signals: ShellSignals, user_out: int, now: float
) -> RelayResult | None:
    """Each relay round: warn as the timers say; the result if it ends now."""
    warning, cut = timers.check(now)
    if warning:
        notice(user_out, warning)
    if cut is not None:
        notice(user_out, CUT_TEXT[cut])
        return RelayResult(cut)
    if signals.hangup:
        return RelayResult(Outcome.HANGUP)
    return None


def _span(seconds: float) -> str:
    seconds = max(1, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def notice(fd: int, text: str) -> None:
    """One line of audit-shell's own on the user's terminal, in any tty mode."""
    write_all(fd, f"\r\n[bastion] {text}\r\n".encode())


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def window_size(fd: int) -> bytes:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return struct.pack("HHHH", 24, 80, 0, 0)


def run_in_pty(
    argv: list[str],
    env: dict[str, str],
    user_in: int,
    user_out: int,
    timers: Timers,
    signals: ShellSignals,
    audit_wait_s: float,
) -> RelayResult:
    """Run argv in a new pty and relay until it ends or is cut."""
    size = window_size(user_in)
    pid, master = os.forkpty()
    if pid == 0:
        _exec_child(argv, env, size)
    try:
        os.set_blocking(master, False)
        return _relay(pid, master, user_in, user_out, timers, signals, audit_wait_s)
    finally:
        _stop(pid)
        os.close(master)


def _exec_child(argv: list[str], env: dict[str, str], size: bytes) -> None:
    """In the forked child: default signals, the user's window size, exec."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in CHILD_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        fcntl.ioctl(0, termios.TIOCSWINSZ, size)
        os.execve(argv[0], argv, env)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"audit-shell: error: cannot run {argv[0]}: {e}\r\n".encode())
    finally:
        os._exit(127)


def _relay(
    pid: int,
    master: int,
    user_in: int,
    user_out: int,
    timers: Timers,
    signals: ShellSignals,
    audit_wait_s: float,
) -> RelayResult:
    audited = audit_wait_s <= 0
    audit_deadline = time.monotonic() + audit_wait_s
    to_child = b""
    while True:
        now = time.monotonic()
        if not audited:
            audited = ssh_is_traced(pid)
            if not audited and now >= audit_deadline:
                notice(user_out, "the audit agent did not pick up this session; closed")
                return RelayResult(Outcome.NOT_AUDITED)
        ended = must_end(timers, signals, user_out, now)
        if ended is not None:
            return ended
        if signals.winch:
            signals.winch = False
            with contextlib.suppress(OSError):
                fcntl.ioctl(master, termios.TIOCSWINSZ, window_size(user_in))
        timeout = timers.next_check_s(now)
        if not audited:
            timeout = min(timeout, AUDIT_POLL_S)
        readers = [master, signals.fd]
        if audited and not to_child:
            readers.append(user_in)  # the user's keys wait until ssh is traced
        writers = [master] if to_child else []
        readable, writable, _ = select.select(readers, writers, [], timeout)
        if signals.fd in readable:
            signals.drain()
        if master in writable:
            try:
                to_child = to_child[os.write(master, to_child) :]
            except BlockingIOError:
                pass
            except OSError:
                to_child = b""
        if master in readable:
            data = _read(master)
            if data is None:
                continue
            if not data:
                return RelayResult(Outcome.EXITED, _reap(pid))
            write_all(user_out, data)
        if user_in in readable:
            data = _read(user_in)
            if not data:
                if data is None:
                    continue
                return RelayResult(Outcome.HANGUP)
            timers.input(time.monotonic())
            to_child = data


CUT_TEXT = {
    Outcome.IDLE: "no input for too long: logging you out",
    Outcome.TIME_LIMIT: "this login reached its time limit: logging you out",
}


def _read(fd: int) -> bytes | None:
    """Data, b"" at the end (EIO: the other side of a pty closed), None: retry."""
    try:
        return os.read(fd, READ_BYTES)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno == errno.EIO:
            return b""
        raise


def _family(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def ssh_is_traced(pid: int) -> bool:
    """Whether the ssh under `pid` (itself, or sshpass's child) is ptraced."""
    for proc in _family(pid):
        try:
            if proc.name() == "ssh" and read_tracer_pid(proc.pid):
                return True
        except psutil.Error:
            continue
    return False


def _reap(pid: int) -> int | None:
    """ssh's exit status once its pty closed; None if it lingers (then stopped)."""
    deadline = time.monotonic() + STOP_STEP_S
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _stop(pid: int) -> None:
    """Stop the child and all it started: SIGHUP, SIGTERM, SIGKILL; reap it."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL):
        family = _family(pid)
        if not _running(pid):
            break
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        deadline = time.monotonic() + STOP_STEP_S
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _running(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return not done  # if done, it is reaped here and _stop's waitpid finds none


@contextlib.contextmanager
def terminal_mode(fd: int, mode: str) -> Iterator[None]:
    """`menu` (no echo, no signals, output still cooked) or `raw`; restored after."""
    try:
        old = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    new = termios.tcgetattr(fd)
    new[0] &= ~(
        termios.IXON | termios.ICRNL | termios.INLCR | termios.ISTRIP | termios.BRKINT
    )
    new[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
    if mode == "raw":
        new[1] &= ~termios.OPOST
    new[6][termios.VMIN] = 1
    new[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSAFLUSH, new)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
