"""audit-shell's paramiko backend: the ssh client and its recorder in one.

Where ptrace is not allowed (a container without CAP_SYS_PTRACE, yama
ptrace_scope 3) the agent cannot strace ssh. This backend opens the session
with paramiko and records the two byte streams itself while relaying them
(agent/shell/chunk_writer.py); the agent reads the recording from the spool and
parses it like a strace log.

Each connection runs in a forked child: the child is "the ssh process" of the
session, whose pid and start time name it in the store (as an ssh's do), and
whose end the agent notices if it is killed before writing its end line. The
parent waits, passes a hangup on, and reads the child's outcome from a pipe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import re
import select
import signal
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.inventory import ShellSettings, Target
from agent.shell.chunk_writer import ChunkWriter, RecorderFailed, start_fields
from agent.shell.relay import (
    Outcome,
    RelayResult,
    ShellSignals,
    Timers,
    must_end,
    notice,
    window_size,
    write_all,
)
from agent.shell.ssh_client import ConnectError, HostKeyChanged, connect
from parsers.events import Direction
from tracer.discovery import read_start_ticks

if TYPE_CHECKING:
    from agent.shell.deny import DenyRelay

READ_BYTES = 65536
STOP_GRACE_S = 5.0  # the child's time to end its session after SIGTERM
_TTY_RE = re.compile(r"/dev/(pts/\d+|tty\w+)")
_TERM_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}")
FAILED = 255  # the child's status when it could not connect or crashed


def run_paramiko(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
    user_in: int,
    user_out: int,
    timers: Timers,
    signals: ShellSignals,
) -> RelayResult:
    """Open `target` with paramiko in a child process; relay and record until done."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(
            settings,
            target,
            tag,
            known_hosts,
            environ,
            user_in,
            user_out,
            timers,
            signals,
            write_fd,
        )
    os.close(write_fd)
    try:
        return _wait_child(pid, read_fd, timers, signals)
    finally:
        os.close(read_fd)


def _wait_child(
    pid: int, read_fd: int, timers: Timers, signals: ShellSignals
) -> RelayResult:
    report = b""
    signalled_at: float | None = None
    while True:
        if signals.hangup and signalled_at is None:
            signalled_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if signalled_at is not None and time.monotonic() - signalled_at > STOP_GRACE_S:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ready, _, _ = select.select([read_fd, signals.fd], [], [], 0.5)
        if signals.fd in ready:
            signals.drain()
        if read_fd in ready:
            data = os.read(read_fd, 4096)
            if data:
                report += data
                continue
            break  # the child is done (or gone)
    _, status = os.waitpid(pid, 0)
    try:
        doc = json.loads(report)
        timers.last_input = float(doc["last_input"])
        return RelayResult(Outcome(doc["outcome"]), doc.get("status"))
    except (ValueError, KeyError, TypeError):
        return RelayResult(Outcome.EXITED, os.waitstatus_to_exitcode(status) or FAILED)


def _child(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
    user_in: int,
    user_out: int,
    timers: Timers,
    signals: ShellSignals,
    report_fd: int,
) -> None:
    """The forked child: never returns, never runs the parent's cleanup."""
    code = FAILED
    try:
        signals.renew()  # a wakeup pipe of its own, not shared with the parent
        result = _session(
            settings,
            target,
            tag,
            known_hosts,
            environ,
            user_in,
            user_out,
            timers,
            signals,
        )
        report = {
            "outcome": result.outcome.value,
            "status": result.status,
            "last_input": timers.last_input,
        }
        write_all(report_fd, json.dumps(report).encode())
        code = 0
    except BaseException as e:
        with contextlib.suppress(BaseException):
            notice(user_out, f"paramiko session failed: {type(e).__name__}: {e}")
    finally:
        os._exit(code)


def _session(
    settings: ShellSettings,
    target: Target,
    tag: str,
    known_hosts: Path,
    environ: dict[str, str],
    user_in: int,
    user_out: int,
    timers: Timers,
    signals: ShellSignals,
) -> RelayResult:
    rows, cols, _, _ = struct.unpack("HHHH", window_size(user_in))
    rows, cols = rows or 24, cols or 80
    writer = ChunkWriter(settings.recordings_dir, tag, settings.recording_mode)
    try:
        writer.open(_start(tag, target, user_in, rows, cols))
    except OSError as e:
        notice(user_out, f"cannot record this session ({e.strerror or e}); closed")
        return RelayResult(Outcome.NOT_AUDITED)
    with writer:
        try:
            gate = _deny_gate(settings, target, rows, cols)
            client = connect(settings, target, known_hosts)
        except HostKeyChanged as e:
            writer.end_reason = "host key changed"
            notice(user_out, str(e))
            return RelayResult(Outcome.EXITED, FAILED)
        except ConnectError as e:
            writer.end_reason = f"connection failed: {e}"[:200]
            notice(user_out, str(e))
            return RelayResult(Outcome.EXITED, FAILED)
        try:
            transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            channel = transport.open_session()
            term = environ.get("TERM", "")
            if not _TERM_RE.fullmatch(term):
                term = "xterm"
            channel.get_pty(term, cols, rows)
            # Like the ssh backend's `SetEnv` (the server passes what AcceptEnv allows).
            channel.update_environment({"AUDIT_SESSION": tag, "LANG": "C.UTF-8"})
            channel.invoke_shell()
            try:
                result = _relay(
                    channel, writer, user_in, user_out, timers, signals, gate
                )
            except RecorderFailed as e:
                # Strict mode: what could not be recorded was never relayed.
                writer.end_reason = f"recording failed: {e}"[:200]
                writer.end_status = "terminated"
                notice(
                    user_out,
                    f"bastion-audit: this session cannot be recorded ({e}); "
                    "closing it.",
                )
                return RelayResult(Outcome.NOT_AUDITED)
            writer.end_reason = f"paramiko session ended: {result.outcome.value}"
            return result
        finally:
            client.close()


def _start(
    tag: str, target: Target, user_in: int, rows: int, cols: int
) -> dict[str, object]:
    pid = os.getpid()
    try:
        tty = os.ttyname(user_in)
    except OSError:
        tty = ""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid:{uid}"
    # An ssh argv saying what was opened: the agent reads host, port, user
    # and tag from it as it does for an ssh it traces.
    argv = [
        "ssh",
        "-t",
        "-o",
        f"SetEnv=AUDIT_SESSION={tag}",
        "-p",
        str(target.host.port),
        "-l",
        target.account.name,
        "--",
        target.host.address,
    ]
    return start_fields(
        tag,
        pid,
        read_start_ticks(pid) or 0,
        uid,
        user,
        tty if _TTY_RE.fullmatch(tty) else "",
        argv,
        rows,
        cols,
    )


def _deny_gate(
    settings: ShellSettings, target: Target, rows: int, cols: int
) -> DenyRelay | None:
    """The deny rules' gate, when the rules file has any (pyte loads only then)."""
    from agent.rules import DenyRulesError, deny_rules

    try:
        rules = deny_rules(settings.rules_file)
    except DenyRulesError as e:
        raise ConnectError(str(e)) from e
    if rules is None:
        return None
    from agent.shell.deny import DenyRelay

    return DenyRelay.for_target(rules, target, rows, cols)


def _relay(
    channel: object,
    writer: ChunkWriter,
    user_in: int,
    user_out: int,
    timers: Timers,
    signals: ShellSignals,
    gate: DenyRelay | None = None,
) -> RelayResult:
    import paramiko

    assert isinstance(channel, paramiko.Channel)
    while True:
        now = time.monotonic()
        ended = must_end(timers, signals, user_out, now)
        if ended is not None:
            return ended
        if signals.winch:
            signals.winch = False
            rows, cols, _, _ = struct.unpack("HHHH", window_size(user_in))
            if rows and cols:
                writer.resize(rows, cols)
                channel.resize_pty(width=cols, height=rows)
                if gate is not None:
                    gate.gate.resized(rows, cols)
        readable, _, _ = select.select(
            [channel, user_in, signals.fd], [], [], timers.next_check_s(now)
        )
        if signals.fd in readable:
            signals.drain()
        if channel in readable:
            data = channel.recv(READ_BYTES)
            if not data:
                status = (
                    channel.recv_exit_status() if channel.exit_status_ready() else None
                )
                return RelayResult(Outcome.EXITED, status)
            writer.chunk(Direction.OUTPUT, data)  # recorded before it is shown
            write_all(user_out, data)
            if gate is not None:
                gate.gate.shown(data)
        if user_in in readable:
            try:
                data = os.read(user_in, READ_BYTES)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                return RelayResult(Outcome.HANGUP)
            timers.input(time.monotonic())
            if gate is not None:
                gate.keys(data, channel, writer, user_out)
                continue
            writer.chunk(Direction.INPUT, data)  # recorded before it is sent
            channel.sendall(data)
