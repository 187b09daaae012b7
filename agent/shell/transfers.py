"""File transfers through the bastion account: scp and sftp, relayed and recorded.

sshd runs audit-shell for every request, and says what was asked in
SSH_ORIGINAL_COMMAND: the sftp subsystem's command (`sftp`, and `scp` of
OpenSSH >= 9.0), or `scp -t PATH` / `scp -f PATH` (`scp -O`). audit-shell
serves the client itself and reaches the granted host with its own ssh
client (paramiko, agent/shell/ssh_client.py), whose sftp subsystem does the
file work there: no remote shell ever sees a path. Nothing is staged on the
bastion.

Each transfer session is recorded like a paramiko terminal session: a
connection record in the intents spool, then a chunk log in the recordings
spool whose start line names the host and account and whose `t` lines are
the files moved (parsers/chunk_log.py); the agent stores them as records of
kind `transfer`. A refused request is recorded too, with its reason; the
client sees one line on stderr.
"""

from __future__ import annotations

import os
import pwd
import re
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.exits import ExitStatus
from agent.intent_file import write_intent
from agent.inventory import ShellSettings, Target
from agent.shell import Refused
from agent.shell import sftp_wire as w
from agent.shell.chunk_writer import ChunkWriter, start_fields
from agent.shell.connect import log_line, managed_known_hosts, new_tag
from agent.shell.relay import ShellSignals, Timers, write_all
from agent.shell.scp_legacy import ScpError, Stream, sink, source
from agent.shell.sftp_relay import SftpRelay
from agent.shell.ssh_client import ConnectError, connect
from agent.shell.transfer_paths import Route, host_path, resolve, routes_for
from parsers.chunk_log import encode_transfer
from parsers.events import Transfer, TransferDirection, TransferOutcome
from tracer.discovery import read_start_ticks

if TYPE_CHECKING:
    import paramiko

READ_BYTES = 1 << 18
TAG_TRIES = 5
SFTP_SERVERS = ("internal-sftp", "/usr/lib/openssh/sftp-server", "/usr/lib/sftp-server")
SCP_FLAGS = frozenset("tfrpdvq")
# What a path may hold: the scp client puts it on the remote command line
# unquoted, so anything a shell would read (; | & $ ` quotes globs spaces) is
# refused outright, though no shell ever sees it here.
_PATH_RE = re.compile(r"[A-Za-z0-9._/@+,:~%=-]{1,4096}")


class TransferRefused(Refused):
    """A transfer request the bastion does not serve; the message says why."""


@dataclass(frozen=True)
class ScpRequest:
    direction: TransferDirection
    paths: tuple[str, ...]  # as the client gave them
    recursive: bool
    preserve: bool
    to_dir: bool  # -d: the target must be a directory


def is_transfer(command: str) -> bool:
    """Whether SSH_ORIGINAL_COMMAND asks for sftp or scp (else: refused as before)."""
    words = command.split()
    return bool(words) and (words[0] in SFTP_SERVERS or words[0] == "scp")


def parse_scp(command: str) -> ScpRequest:
    """`scp -t|-f [-r] [-p] [-d] [--] PATH...` as the scp client sends it."""
    words = command.split(" ")
    if words[0] != "scp":
        raise TransferRefused(f"refused: not an scp command: {command[:80]!r}")
    flags: set[str] = set()
    i = 1
    while i < len(words) and words[i].startswith("-"):
        if words[i] == "--":
            i += 1
            break
        letters = set(words[i][1:])
        if not letters or not letters <= SCP_FLAGS:
            raise TransferRefused(f"scp option {words[i][:20]!r} is refused")
        flags |= letters
        i += 1
    paths = tuple(words[i:])
    if ("t" in flags) == ("f" in flags):
        raise TransferRefused("refused: scp needs exactly one of -t and -f")
    if not paths or ("t" in flags and len(paths) != 1):
        raise TransferRefused(
            "refused: scp needs one target path (-t) or source paths (-f)"
        )
    for path in paths:
        if not _PATH_RE.fullmatch(path):
            raise TransferRefused(f"path {path[:80]!r} is refused (shell syntax)")
    return ScpRequest(
        TransferDirection.UPLOAD if "t" in flags else TransferDirection.DOWNLOAD,
        paths,
        recursive="r" in flags,
        preserve="p" in flags,
        to_dir="d" in flags,
    )


# -- the recording ---------------------------------------------------------


class Recording:
    """The agent's record of one transfer session to one host (or a refusal)."""

    def __init__(
        self, settings: ShellSettings, user: str, client_addr: str | None
    ) -> None:
        self.settings = settings
        self.user = user
        self.client_addr = client_addr
        self.writer: ChunkWriter | None = None
        self.tag = ""

    def open(self, target: Target | None, label: str) -> None:
        """Record the connection, then start the session's log."""
        if self.writer is not None:
            return
        self.tag = self._intent(target)
        writer = ChunkWriter(
            self.settings.recordings_dir, self.tag, self.settings.recording_mode
        )
        pid, uid = os.getpid(), os.getuid()
        argv = ["ssh", "-T", "-o", f"SetEnv=AUDIT_SESSION={self.tag}"]
        if target is not None:
            argv += ["-p", str(target.host.port), "-l", target.account.name]
            argv += ["--", target.host.address]
        else:
            argv += ["--", label]
        start = start_fields(
            self.tag,
            pid,
            read_start_ticks(pid) or 0,
            uid,
            self.user,
            "",
            argv,
            24,
            80,
        )
        writer.open(start)
        writer.end_reason = "transfer session ended"
        self.writer = writer
        log_line(f"{self.user}: transfer session {self.tag} to {label}")

    def _intent(self, target: Target | None) -> str:
        for _ in range(TAG_TRIES):
            tag = new_tag()
            if target is None:
                return tag
            try:
                write_intent(
                    self.settings.intents_dir,
                    tag,
                    inventory_host=target.host.name,
                    address=target.host.address,
                    port=target.host.port,
                    remote_account=target.account.name,
                    client_addr=self.client_addr,
                )
            except FileExistsError:
                continue
            return tag
        raise FileExistsError(f"no free tag after {TAG_TRIES} tries")

    def record(self, t: Transfer) -> None:
        assert self.writer is not None
        self.writer.record(encode_transfer(t))
        log_line(
            f"{self.user}: {t.direction} {t.path!r} {t.size} bytes: {t.outcome}"
            + (f" ({t.reason})" if t.reason else "")
        )

    def close(self, reason: str) -> None:
        if self.writer is not None:
            self.writer.end_reason = reason
            self.writer.close()


@contextmanager
def recording(
    settings: ShellSettings, user: str, client_addr: str | None
) -> Iterator[Recording]:
    rec = Recording(settings, user, client_addr)
    try:
        yield rec
    finally:
        rec.close("transfer session ended")


def refuse(rec: Recording, route: Route | None, label: str, t: Transfer) -> None:
    rec.open(route.target if route else None, label)
    rec.record(t)


# -- serving ---------------------------------------------------------------


def serve_transfer(
    command: str,
    settings: ShellSettings,
    targets: list[Target],
    user: str,
    client_addr: str | None,
) -> int:
    """Serve one scp or sftp request; the exit status."""
    routes = routes_for(targets)
    if not routes:
        raise TransferRefused("file transfers are not granted to you here")
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    known_hosts = managed_known_hosts(settings.known_hosts, home)
    with recording(settings, user, client_addr) as rec, ShellSignals() as signals:
        if command.split()[0] in SFTP_SERVERS:
            return _sftp(settings, routes, known_hosts, rec, signals)
        return _scp(command, settings, routes, known_hosts, rec)


def _scp(
    command: str,
    settings: ShellSettings,
    routes: list[Route],
    known_hosts: Path,
    rec: Recording,
) -> int:
    now = time.time
    try:
        request = parse_scp(command)
    except TransferRefused as e:
        label = _first_label(command)
        route = next((r for r in routes if r.label == label), None)
        why = str(e)
        refuse(rec, route, label, _refusal(TransferDirection.UPLOAD, command, why))
        raise
    by_label = {r.label: r for r in routes}
    located: list[tuple[Route, str, str]] = []  # route, host path, client's name
    for path in request.paths:
        where = resolve(path, allow_up=False)
        if isinstance(where, str) or where[0] is None or where[0] not in by_label:
            why = where if isinstance(where, str) else f"no host for {path!r} here"
            route = by_label.get(_first_label(path))
            refuse(
                rec, route, _first_label(path), _refusal(request.direction, path, why)
            )
            raise TransferRefused(why)
        located.append((by_label[where[0]], host_path(where[1]), path))
    route = located[0][0]
    if any(r is not route for r, _, _ in located):
        raise TransferRefused("refused: one host per scp command")
    if not route.target.transfers.allows(request.direction):
        why = f"{request.direction}s to or from {route.label} are not granted"
        refuse(rec, route, route.label, _refusal(request.direction, located[0][2], why))
        raise TransferRefused(why)
    rec.open(route.target, route.label)
    stream = Stream(0, 1)
    try:
        client = connect(settings, route.target, known_hosts)
    except ConnectError as e:
        stream.fatal(str(e))
        rec.close(f"connection failed: {e}"[:200])
        return ExitStatus.ERROR
    try:
        files = client.open_sftp()
        limit = route.target.max_transfer_bytes
        if request.direction == TransferDirection.UPLOAD:
            host = located[0][1]
            if request.to_dir:
                try:
                    files.listdir(host)
                except OSError:
                    stream.fatal(f"{located[0][2]}: not a directory")
                    return ExitStatus.ERROR
            sink(stream, files, host, limit, request.recursive, now, rec.record)
        else:
            paths = [(p, name) for _, p, name in located]
            source(
                stream,
                files,
                paths,
                limit,
                request.recursive,
                request.preserve,
                now,
                rec.record,
            )
    except ScpError as e:
        rec.close(f"scp ended: {e}"[:200])
        return ExitStatus.ERROR
    finally:
        client.close()
    return ExitStatus.SUCCESS


def _sftp(
    settings: ShellSettings,
    routes: list[Route],
    known_hosts: Path,
    rec: Recording,
    signals: ShellSignals,
) -> int:
    session = SftpSession(settings, routes, known_hosts, rec)
    timers = Timers.starting(
        time.monotonic(),
        settings.idle_timeout_s,
        settings.warn_before_s,
        settings.max_session_s,
    )
    why = "client closed the session"
    try:
        while True:
            now = time.monotonic()
            _, cut = timers.check(now)
            if cut is not None or signals.hangup:
                why = f"ended: {cut.value if cut else 'hangup'}"
                break
            waiting: list[Any] = [0, signals.fd]
            if session.channel is not None:
                waiting.append(session.channel)
            ready, _, _ = select.select(waiting, [], [], timers.next_check_s(now))
            if signals.fd in ready:
                signals.drain()
            if 0 in ready:
                timers.input(time.monotonic())
                ended = session.from_client()
            elif session.channel is not None and session.channel in ready:
                ended = session.from_host()
            else:
                continue
            if ended:
                why = ended
                break
    except w.WireError as e:
        why = f"protocol error: {e}"
    finally:
        session.close(why)
    return ExitStatus.SUCCESS


class SftpSession:
    """The sftp relay's I/O: the client on fds 0 and 1, the host on a channel."""

    def __init__(
        self,
        settings: ShellSettings,
        routes: list[Route],
        known_hosts: Path,
        rec: Recording,
    ) -> None:
        self.settings = settings
        self.known_hosts = known_hosts
        self.rec = rec
        self.relay = SftpRelay(routes, time.time)
        self.from_client_bytes, self.from_host_bytes = w.Framer(), w.Framer()
        self.client: paramiko.SSHClient | None = None
        self.channel: paramiko.Channel | None = None
        self.unrouted: list[Transfer] = []  # refusals before a host was chosen

    def from_client(self) -> str:
        """Relay what the client sent; why the session ends, if it does."""
        data = os.read(0, READ_BYTES)
        if not data:
            return "client closed the session"
        out = []
        for packet in self.from_client_bytes.feed(data):
            out += self.relay.client(packet)
        return self._send(out)

    def from_host(self) -> str:
        assert self.channel is not None
        data = self.channel.recv(READ_BYTES)
        if not data:
            route = self.relay.route
            return f"{route.label if route else 'the host'} closed sftp"
        out = []
        for packet in self.from_host_bytes.feed(data):
            out += self.relay.host(packet)
        return self._send(out)

    def _send(self, out: list[tuple[Route | None, w.Packet]]) -> str:
        """Record what is done, then pass the packets on (a record first)."""
        route = self.relay.route
        if route is not None and self.channel is None:
            try:
                self.client, self.channel = _open_sftp(
                    self.settings, route, self.known_hosts, self.rec
                )
            except ConnectError as e:
                log_line(f"{self.rec.user}: {e}")
                return str(e)
        self._record()
        for dest, packet in out:
            if dest is None:
                write_all(1, packet.encode())
            else:
                assert self.channel is not None
                self.channel.sendall(packet.encode())
        return ""

    def _record(self) -> None:
        # The person sees the status code (OpenSSH's sftp and scp print
        # "Permission denied", not a status's message; and sshd drops a
        # subsystem's stderr: session.c passes ignore_fderr for it); the
        # reason is in the record and in the syslog line.
        self.unrouted += self.relay.take_transfers()
        route = self.relay.route
        if route is not None and self.unrouted:
            self.rec.open(route.target, route.label)
            for t in self.unrouted:
                self.rec.record(t)
            self.unrouted = []

    def close(self, why: str) -> None:
        self.relay.finish(why)
        self._record()
        if self.unrouted:
            # Refused before any host was touched: a record of its own.
            self.rec.open(None, "/")
            for t in self.unrouted:
                self.rec.record(t)
        if self.client is not None:
            self.client.close()
        self.rec.close(why[:200])


def _open_sftp(
    settings: ShellSettings, route: Route, known_hosts: Path, rec: Recording
) -> tuple[paramiko.SSHClient, paramiko.Channel]:
    """Connect to the route's host; its sftp subsystem, sent our INIT."""
    import paramiko

    rec.open(route.target, route.label)
    client = connect(settings, route.target, known_hosts)
    try:
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session()
        channel.update_environment({"AUDIT_SESSION": rec.tag})
        channel.invoke_subsystem("sftp")
        channel.sendall(w.Packet(w.Op.INIT, w.u32(w.VERSION)).encode())
    except (paramiko.SSHException, OSError) as e:
        client.close()
        raise ConnectError(f"{route.label} offers no sftp: {e}") from e
    return client, channel


def _first_label(path: str) -> str:
    words = path.split()
    last = words[-1] if words else path
    return last.lstrip("/").split("/", 1)[0] or "/"


def _refusal(direction: TransferDirection, name: str, why: str) -> Transfer:
    now = time.time()
    return Transfer(
        now, direction, name, name, 0, None, now, TransferOutcome.REFUSED, why
    )
