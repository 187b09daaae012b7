"""Finding tagged ssh clients by polling the process table with psutil.

Each round inspects only processes it has not seen, with two exceptions that
keep an `exec` from slipping by: a process seen while still a shell that then
execs ssh keeps its pid, so young processes are looked at again on every
round for YOUNG_WINDOW_S, and every process that is not ssh yet once every
SWEEP_INTERVAL_S. Vanished processes, zombies and kernel threads are
ordinary races: counted, never raised.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import psutil

from tracer.tags import parse_ssh_argv, ssh_version

log = logging.getLogger(__name__)

YOUNG_WINDOW_S = 2.0
SWEEP_INTERVAL_S = 1.0
SSH_NAMES = frozenset({"ssh"})  # executable basenames that are ssh clients


@dataclass(frozen=True, slots=True)
class TaggedSsh:
    """A running ssh client that carries a valid session tag."""

    pid: int
    start_ticks: int  # with the pid, names this process for good
    tag: str
    uid: int
    exe: str
    tracer_pid: int  # 0 when nothing ptraces it yet

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


def read_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: start time in clock ticks after boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses; the fields follow the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def read_tracer_pid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def is_alive(identity: tuple[int, int]) -> bool:
    """Whether that very process (not a reuse of its pid) still runs."""
    pid, ticks = identity
    return (
        read_start_ticks(pid) == ticks
        and psutil.pid_exists(pid)
        and not _is_zombie(pid)
    )


def _descends_from(proc: psutil.Process, ancestor: int) -> bool:
    try:
        return any(parent.pid == ancestor for parent in proc.parents())
    except psutil.Error:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


@dataclass
class Discovery:
    """Polls for tagged ssh clients; `poll()` returns each one once."""

    # Only ssh processes descended from this pid count (0: all). Lets an agent
    # audit one process tree, e.g. a test suite beside other agents.
    scope_pid: int = 0
    stats: DiscoveryStats = field(default_factory=DiscoveryStats)
    _first_seen: dict[int, float] = field(default_factory=dict)
    _settled: set[int] = field(default_factory=set)  # ssh already classified
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

    def poll(self) -> list[TaggedSsh]:
        now = time.monotonic()
        self.stats.rounds += 1
        pids = set(psutil.pids())
        sweep = now - self._last_sweep >= SWEEP_INTERVAL_S
        if sweep:
            self._last_sweep = now
        found: list[TaggedSsh] = []
        for pid in pids:
            first = self._first_seen.setdefault(pid, now)
            if pid in self._settled:
                continue
            if first != now and not sweep and now - first >= YOUNG_WINDOW_S:
                continue
            tagged = self._inspect(pid)
            if tagged is not None:
                found.append(tagged)
        for pid in set(self._first_seen) - pids:
            del self._first_seen[pid]
            self._settled.discard(pid)
        return found

    def _version(self, pid: int) -> str | None:
        """OpenSSH version of the process's binary, read once per binary file."""
        path = f"/proc/{pid}/exe"
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
            if key not in self._versions:
                if len(self._versions) > 64:
                    self._versions.clear()
                with open(path, "rb") as f:
                    self._versions[key] = ssh_version(f.read(8 << 20))
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
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                argv = proc.cmdline()
                uid = proc.uids().real
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self.stats.vanished += 1  # gone, a zombie, or a kernel thread
            return None
        if not any(argv):
            # Mid-execve: the kernel points /proc/PID/exe at the new binary
            # before it lays out the new argv (cmdline reads empty until
            # then). Settling now would lose the session: look again.
            self.stats.mid_exec += 1
            return None
        self._settled.add(pid)
        if self.scope_pid and (
            self.scope_gone() or not _descends_from(proc, self.scope_pid)
        ):
            return None
        ssh = parse_ssh_argv(argv, self._version(pid))
        if ssh.tag is None:
            if ssh.bad_tag is not None:
                self.stats.bad_tags += 1
                log.warning(
                    "ssh %d of uid %d carries an invalid tag %s; not traced",
                    pid,
                    uid,
                    ascii(ssh.bad_tag[:40]),
                )
            return None
        ticks = read_start_ticks(pid)
        if ticks is None:
            self.stats.vanished += 1
            return None
        return TaggedSsh(pid, ticks, ssh.tag, uid, exe, read_tracer_pid(pid))
