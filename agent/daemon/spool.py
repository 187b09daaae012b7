"""The agent's side of the paramiko recordings spool: which files it trusts.

audit-shell runs as the bastion user and cannot write the root-only data
directory, so its paramiko backend writes `<tag>.chunks` into a spool
(default /var/spool/bastion-audit/recordings, root's, mode 1733: anyone may
create a file, nobody may list it or touch another's file). The ingest reads
those files in place. A recording counts only if it is a plain file with one
link, not a symlink, owned by the uid its start line names; the bastion user
is taken from that owner, never from the text. A file is read at most
RECORDING_MAX_BYTES far.

The process a start line names (pid and start time are world-readable in
/proc) is a claim, not a fact: a recording binds to it only if that process
is alive, is its owner's and holds the file open (audit-shell's recorder
writes it through the fd it created it with), or, once that process is gone,
if the start line carries the per-session secret audit-shell put in its
connection record for the agent (`proof`). Anything else is refused whole.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from pathlib import Path

from agent import AgentError
from agent.intent_file import user_name
from parsers.chunk_log import SUFFIX as CHUNK_SUFFIX
from parsers.chunk_log import ChunkLogDecoder
from parsers.strace_lines import MARKER_PREFIX, StraceDecoder, parse_marker
from tracer.discovery import read_start_ticks
from tracer.session_log import (
    START_LINE_MAX_BYTES,
    SessionLogError,
    SessionStart,
    start_from_head,
)

STRACE_SUFFIX = ".strace"
RECORDING_MAX_BYTES = 8 << 30  # a session's recording is read this far, no further
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# audit-shell's recorder opens its file among its first few descriptors; a
# process with more is not looked through further (its owner chose that many).
WRITER_FDS_MAX = 256

# Whether the connection record of the start's tag, written for the start's
# user, carries this proof (agent/daemon/intents.py).
Proven = Callable[[SessionStart, str], bool]

Decoder = StraceDecoder | ChunkLogDecoder


class SpoolError(AgentError):
    """A file in the recordings spool that the agent will not read."""


def decoder_for(name: str, tty: str | None, offset: int = 0) -> Decoder:
    """The decoder for a session log, by its suffix."""
    if name.endswith(CHUNK_SUFFIX):
        return ChunkLogDecoder(tty=tty, offset=offset)
    return StraceDecoder(tty=tty, offset=offset)


def spool_usable(path: Path) -> bool:
    """Root's, and sticky if others may write it: else nobody's files are safe."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == 0
        and (not writable or bool(st.st_mode & stat.S_ISVTX))
    )


def check_file(fd: int, path: Path, uid: int | None = None) -> os.stat_result:
    """A spool file's stat, if it may be read as a recording of `uid`."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        raise SpoolError(f"recording {path} is not a plain file")
    if uid is not None and st.st_uid != uid:
        raise SpoolError(
            f"recording {path} belongs to uid {st.st_uid}, its start line says {uid}"
        )
    return st


def read_recording_start(path: Path, proven: Proven) -> SessionStart | None:
    """The session a spool recording belongs to; None while its first line waits.

    The start line's uid must be the file's owner; the user name is the
    owner's, whatever the line says; the process it names must be the
    writer (see the module's docstring), else SpoolError.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise SpoolError(f"recording {path}: cannot open it: {e.strerror}") from e
    try:
        st = check_file(fd, path)
        head = os.pread(fd, START_LINE_MAX_BYTES, 0)
    finally:
        os.close(fd)
    try:
        start = start_from_head(head, f"recording {path}")
    except SessionLogError as e:
        raise SpoolError(str(e)) from e
    if start is None:
        return None
    if start.recorder != "paramiko":
        raise SpoolError(f"recording {path}: not written by the paramiko recorder")
    if start.uid != st.st_uid:
        raise SpoolError(
            f"recording {path} belongs to uid {st.st_uid}, its start line says "
            f"{start.uid}"
        )
    start = dataclasses.replace(start, user=user_name(st.st_uid))
    if not held_by_writer(path, start, st) and not proven(start, _proof(head)):
        raise SpoolError(
            f"recording {path} names process {start.ssh_pid}, which is gone or "
            "does not hold it open, and no connection record vouches for it"
        )
    return start


def held_by_writer(path: Path, start: SessionStart, st: os.stat_result) -> bool:
    """Whether the process the start line names is alive and holds this file.

    SpoolError if that process runs, but as someone other than the file's owner.
    """
    pid, ticks = start.identity
    if read_start_ticks(pid) != ticks:
        return False  # gone, or never was
    try:
        owner = os.stat(f"/proc/{pid}").st_uid  # its effective uid
    except OSError:
        return False
    if owner != st.st_uid:
        raise SpoolError(
            f"recording {path} of uid {st.st_uid} names process {pid} of uid {owner}"
        )
    held = False
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            for n, entry in enumerate(fds):
                if n >= WRITER_FDS_MAX:
                    break
                try:
                    target = os.stat(entry.path)  # the open file itself
                except OSError:
                    continue
                if (target.st_dev, target.st_ino) == (st.st_dev, st.st_ino):
                    held = True
                    break
    except OSError:
        return False
    # Still that process: not a reuse of its pid while we looked.
    return held and read_start_ticks(pid) == ticks


def _proof(head: bytes) -> str:
    """The start line's `proof`: the secret of audit-shell's connection record."""
    line = head.partition(b"\n")[0]
    marker = parse_marker(line) if line.startswith(MARKER_PREFIX) else None
    proof = marker.fields.get("proof") if marker is not None else None
    return proof if isinstance(proof, str) else ""
