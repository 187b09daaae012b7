"""Small, bounded reads of /proc for one process.

Every read here is bounded in bytes and never raises for a process that is
gone: vanished processes, zombies and kernel threads are ordinary races.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading

# One ssh command line worth parsing. Anything past it is not read: argv is
# the user's to make large (up to a quarter of the stack limit, which they
# set), and a person's ssh needs a few hundred bytes.
ARGV_MAX_BYTES = 32 << 10
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after `comm`, numbered from field 3 (state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read(4096)
    except OSError:
        return None
    # comm may hold spaces and parentheses; the fields follow the last ')'.
    return stat_line[stat_line.rfind(b")") + 2 :].split()


def read_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: start time in clock ticks after boot."""
    fields = read_stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def read_status_field(pid: int, name: bytes) -> list[bytes] | None:
    """The values of one line of /proc/PID/status (`name` without the colon)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            # One read: the kernel rebuilds the file on each read(), and a
            # traced process flips its State line in between.
            text = f.read(8192)
    except OSError:
        return None
    for line in text.splitlines():
        key, colon, values = line.partition(b":")
        if colon and key == name:
            return values.split()
    return None


def read_tracer_pid(pid: int) -> int:
    values = read_status_field(pid, b"TracerPid")
    try:
        return int(values[0]) if values else 0
    except ValueError:
        return 0


def read_uids(pid: int) -> tuple[int, ...] | None:
    """Real, effective, saved and filesystem uid."""
    values = read_status_field(pid, b"Uid")
    try:
        return tuple(int(v) for v in values) if values else None
    except ValueError:
        return None


def is_zombie(pid: int) -> bool:
    fields = read_stat_fields(pid)
    return fields is None or fields[:1] in ([b"Z"], [b"X"], [])


def is_alive(identity: tuple[int, int]) -> bool:
    """Whether that very process (not a reuse of its pid) still runs."""
    pid, ticks = identity
    fields = read_stat_fields(pid)
    if fields is None or len(fields) < 20:
        return False
    return fields[0] not in (b"Z", b"X") and fields[19] == str(ticks).encode()


def read_argv(pid: int) -> tuple[list[bytes], bool] | None:
    """argv as the kernel holds it, at most ARGV_MAX_BYTES; and whether cut.

    A cut argv loses its last, partial argument: a tag cut in two would read
    as another tag.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(ARGV_MAX_BYTES + 1)
    except OSError:
        return None
    cut = len(raw) > ARGV_MAX_BYTES
    if cut:
        raw = raw[: raw.rfind(b"\0", 0, ARGV_MAX_BYTES) + 1]
        if not raw:
            return [], True
    return raw.removesuffix(b"\0").split(b"\0"), cut


def read_argv_bytes(pid: int) -> bytes | None:
    """/proc/PID/cmdline as read_argv bounds it, NUL-separated."""
    argv = read_argv(pid)
    if argv is None:
        return None
    return b"".join(a + b"\0" for a in argv[0])


def exe_key(pid: int) -> tuple[int, int, int] | None:
    """The executable's file (device, inode, mtime), through the fd, not a path."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def fd_device(pid: int, fd: int) -> int | None:
    """st_rdev of what fd `fd` of `pid` is, if it is a character device.

    stat() of /proc/PID/fd/N reaches the open file itself (the kernel does not
    resolve the link's text), so a deleted file or a symlink planted under the
    name readlink shows is what it is: not a device.
    """
    try:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) else None


def read_boot_time() -> float:
    """When the machine booted (epoch seconds), from /proc/stat's btime."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def started_at(start_ticks: int, boot_time: float) -> float:
    """A process's start time (epoch seconds) from its start ticks."""
    return boot_time + start_ticks / _CLK_TCK


def set_thread_nice(nice: int) -> bool:
    """Give the calling thread this nice value (Linux: nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:
        return False  # not allowed (no CAP_SYS_NICE): the default stands
    return True


def name_threads() -> None:
    """Each running thread's kernel name (comm) from its Python name.

    `top -H` and /proc/PID/task/*/comm then tell the ingest from the store's
    writer; else every thread is the program's name. The main thread keeps
    it: its comm is the process's (ps, pgrep, psutil). The kernel keeps 15
    bytes. A thread may rename another of its own process.
    """
    for thread in threading.enumerate():
        if thread.native_id is None or thread is threading.main_thread():
            continue
        name = thread.name.encode("ascii", "replace")[:15]
        comm = f"/proc/self/task/{thread.native_id}/comm"
        # OSError: the thread has just ended, or there is no /proc.
        with contextlib.suppress(OSError), open(comm, "wb") as f:
            f.write(name)


def set_nice(pid: int, nice: int) -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, nice)


def read_schedstat(pid: int) -> tuple[int, int] | None:
    """Nanoseconds on a CPU and waiting on a run queue (/proc/PID/schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            run, wait, _ = f.read(256).split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return None
