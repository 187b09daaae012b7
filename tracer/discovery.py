"""Finding tagged ssh clients: one look at each process that execs, or a poll.

`exec_seen(pid)` looks at a process the kernel just reported an exec of
(tracer/proc_events.py); `poll()` walks the process table, the safety net
under those events and the only way where they are unavailable. A poll
inspects only processes it has not seen, with two exceptions that keep an
`exec` from slipping by: young processes are looked at again on every round
for YOUNG_WINDOW_S, and every other process that is not an ssh once every
SWEEP_INTERVAL_S; an ssh already judged untagged is looked at again when its
executable or argv area changed (it exec'd). Vanished processes, zombies and
kernel threads are ordinary races: counted, never raised.

Work per process is bounded whatever its argv: at most ARGV_MAX_BYTES are
read, a cheap scan of the raw bytes settles most processes without decoding
them, and the binary's version is read only when argv needs it, in bounded
chunks.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from dataclasses import dataclass, field

from tracer.procfs import (
    exe_key,
    is_alive,
    read_argv,
    read_start_ticks,
    read_stat_fields,
    read_tracer_pid,
    read_uids,
)
from tracer.tags import may_carry_tag, parse_ssh_argv, ssh_version

# is_alive and the readers: still imported from here by the agent.
__all__ = ["Discovery", "TaggedSsh", "is_alive", "read_start_ticks", "read_tracer_pid"]

log = logging.getLogger(__name__)

YOUNG_WINDOW_S = 2.0
SWEEP_INTERVAL_S = 1.0
SSH_NAMES = frozenset({"ssh"})  # executable basenames that are ssh clients
VERSION_READ_MAX_BYTES = 8 << 20  # where in an ssh binary its version string is
VERSION_CHUNK_BYTES = 1 << 20
MAX_ANCESTRY = 4096  # a parent chain longer than this is not followed


class Seen(enum.StrEnum):
    """What discovery made of an ssh client (TaggedSsh.seen)."""

    TAGGED = "tagged"  # a valid tag: traced
    UNTAGGED = "untagged"  # no tag: on record, traced only with trace_untagged
    REFUSED = "refused"  # a tag that is not valid: on record, with the reason


@dataclass(frozen=True, slots=True)
class TaggedSsh:
    """A running ssh client, with the session tag it carries (or was given).

    An untagged one (or one whose tag was refused) is reported too, so that
    every ssh on the bastion is on record; with `trace_untagged` it is traced
    under a tag made from its identity (`ut-PID-TICKS`, the same after a
    restart of the agent), `generated` set.
    """

    pid: int
    start_ticks: int  # with the pid, names this process for good
    tag: str
    uid: int
    exe: str
    tracer_pid: int  # 0 when nothing ptraces it yet
    argv: bytes = b""  # NUL-separated, as read (at most ARGV_MAX_BYTES)
    ssh_version: str | None = None
    seen: Seen = Seen.TAGGED
    reason: str = ""  # why a tag was refused
    generated: bool = False  # the tag is ours: an untagged ssh traced anyway

    @property
    def traced(self) -> bool:
        """Whether the supervisor should trace it (else it is only recorded)."""
        return self.seen == Seen.TAGGED or self.generated

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.start_ticks


@dataclass
class DiscoveryStats:
    rounds: int = 0
    inspected: int = 0
    vanished: int = 0
    bad_tags: int = 0
    mid_exec: int = 0  # ssh seen between execve's switch and its argv
    long_argv: int = 0  # argv past ARGV_MAX_BYTES, read only that far
    exec_events: int = 0
    forked: int = 0  # an ssh's child caught between its fork and its exec


def _fingerprint(pid: int, exe: str) -> tuple[str, bytes, bytes] | None:
    """What changes when a process execs: its binary and its argv area.

    Fields 48 and 49 of /proc/PID/stat (arg_start, arg_end) are addresses in
    the new stack that each execve lays out afresh.
    """
    fields = read_stat_fields(pid)
    if fields is None or len(fields) < 47:
        return None
    return exe, fields[45], fields[46]


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether `ancestor` is a parent, grandparent... of `pid` (ppid in stat)."""
    for _ in range(MAX_ANCESTRY):
        fields = read_stat_fields(pid)
        if fields is None or len(fields) < 2:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _forked_copy(pid: int, args: list[bytes]) -> bool:
    """Whether `pid` is a fork of its parent that has not exec'd yet."""
    fields = read_stat_fields(pid)
    if fields is None or len(fields) < 2:
        return False
    parent = int(fields[1])
    if parent <= 1 or exe_key(parent) != exe_key(pid):
        return False
    argv = read_argv(parent)
    return argv is not None and argv[0] == args


def _read_version(path: str) -> str | None:
    """The OpenSSH version string in a binary, read in bounded chunks."""
    overlap = 64  # longer than any version string
    tail = b""
    with open(path, "rb") as f:
        for _ in range(VERSION_READ_MAX_BYTES // VERSION_CHUNK_BYTES):
            chunk = f.read(VERSION_CHUNK_BYTES)
            if not chunk:
                return None
            found = ssh_version(tail + chunk)
            if found is not None:
                return found
            tail = chunk[-overlap:]
    return None


@dataclass
class Discovery:
    """Finds tagged ssh clients; each one is returned once."""

    # Only ssh processes descended from this pid count (0: all). Lets an agent
    # audit one process tree, e.g. a test suite beside other agents.
    scope_pid: int = 0
    # Trace ssh clients without a tag too, under a generated tag (else they
    # are only put on record).
    trace_untagged: bool = False
    stats: DiscoveryStats = field(default_factory=DiscoveryStats)
    _first_seen: dict[int, float] = field(default_factory=dict)
    # ssh already classified, with what would change if it exec'd
    _settled: dict[int, tuple[str, bytes, bytes] | None] = field(default_factory=dict)
    _last_sweep: float = 0.0
    _versions: dict[tuple[int, int, int], str | None] = field(default_factory=dict)
    _scope_ticks: int | None = None

    def __post_init__(self) -> None:
        if self.scope_pid:
            self._scope_ticks = read_start_ticks(self.scope_pid)

    def scope_gone(self) -> bool:
        """Whether the process this discovery is scoped to has ended.

        Its pid may then be reused by anyone (pid_max is often 32768), which
        would put strangers' sessions in scope; and its orphans, reparented,
        are out of scope anyway.
        """
        if not self.scope_pid:
            return False
        ticks = read_start_ticks(self.scope_pid)
        return ticks is None or ticks != self._scope_ticks

    def poll(self, sweep: bool | None = None) -> list[TaggedSsh]:
        """Walk the process table (`sweep`: look at every process again)."""
        now = time.monotonic()
        self.stats.rounds += 1
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        if sweep is None:
            sweep = now - self._last_sweep >= SWEEP_INTERVAL_S
        if sweep:
            self._last_sweep = now
        found: list[TaggedSsh] = []
        for pid in pids:
            first = self._first_seen.setdefault(pid, now)
            if pid in self._settled:
                if not sweep or not self._exec_since_settled(pid):
                    continue
            elif first != now and not sweep and now - first >= YOUNG_WINDOW_S:
                continue
            tagged = self._inspect(pid)
            if tagged is not None:
                found.append(tagged)
        for pid in set(self._first_seen) - pids:
            self.forget(pid)
        return found

    def exec_seen(self, pid: int) -> TaggedSsh | None:
        """The kernel reports that `pid` exec'd: look at it now, as new.

        Unless the poll looked at that very exec already: the event can come
        after it (an invalid tag was logged twice so, in a test under load).
        """
        self.stats.exec_events += 1
        if pid in self._settled and not self._exec_since_settled(pid):
            return None
        self._settled.pop(pid, None)
        self._first_seen[pid] = time.monotonic()
        return self._inspect(pid)

    def forget(self, pid: int) -> None:
        """`pid` has ended; a process that reuses it is a new one."""
        self._first_seen.pop(pid, None)
        self._settled.pop(pid, None)

    def _exec_since_settled(self, pid: int) -> bool:
        try:
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        except OSError:
            return False
        return _fingerprint(pid, exe) != self._settled.get(pid)

    def _version(self, pid: int) -> str | None:
        """OpenSSH version of the process's binary, read once per binary file."""
        path = f"/proc/{pid}/exe"
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
            if key not in self._versions:
                if len(self._versions) > 64:
                    self._versions.clear()
                self._versions[key] = _read_version(path)
            return self._versions[key]
        except OSError:
            return None

    def _inspect(self, pid: int) -> TaggedSsh | None:
        self.stats.inspected += 1
        try:
            # A bare readlink first: most processes are not ssh, and this is
            # the check a sweep repeats for each of them.
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        except OSError:
            self.stats.vanished += 1  # gone, a zombie, or a kernel thread
            return None
        if os.path.basename(exe) not in SSH_NAMES:
            return None
        argv = read_argv(pid)
        if argv is None:
            self.stats.vanished += 1
            return None
        args, cut = argv
        if not any(args):
            # Mid-execve: the kernel points /proc/PID/exe at the new binary
            # before it lays out the new argv (cmdline reads empty until
            # then). Settling now would lose the session: look again.
            self.stats.mid_exec += 1
            return None
        self._settled[pid] = _fingerprint(pid, exe)
        raw = b"\0".join(args)
        if self.scope_pid and (
            self.scope_gone() or not descends_from(pid, self.scope_pid)
        ):
            return None
        uids = read_uids(pid)
        if uids is None:
            self.stats.vanished += 1
            return None
        if cut:
            self.stats.long_argv += 1
        # -P's meaning depends on the version (tracer/tags.py): read the
        # binary only when argv has it.
        needs_version = any(a[:1] == b"-" and b"P" in a for a in args[1:])
        version = self._version(pid) if needs_version else None
        tag: str | None = None
        seen, reason = Seen.UNTAGGED, ""
        if may_carry_tag(raw):  # else surely untagged: no parse needed
            ssh = parse_ssh_argv([os.fsdecode(a) for a in args], version)
            tag = ssh.tag
            if ssh.bad_tag is not None:
                self.stats.bad_tags += 1
                seen = Seen.REFUSED
                reason = f"invalid session tag {ascii(ssh.bad_tag[:40])}"
                log.warning("ssh %d of uid %d: %s; not traced", pid, uids[0], reason)
        ticks = read_start_ticks(pid)
        if ticks is None:
            self.stats.vanished += 1
            return None
        if _forked_copy(pid, args):
            # ssh forks before it execs a ProxyCommand or LocalCommand: for
            # that moment the child is the same binary with the same argv.
            # It is no session of its own; look again (an exec is reported).
            del self._settled[pid]
            self.stats.forked += 1
            return None
        if tag is not None:
            seen = Seen.TAGGED
        return TaggedSsh(
            pid,
            ticks,
            tag or f"ut-{pid}-{ticks}",
            uids[0],
            exe,
            read_tracer_pid(pid),
            raw + b"\0",
            version,
            seen,
            reason,
            generated=seen != Seen.TAGGED and self.trace_untagged,
        )
