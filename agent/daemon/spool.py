"""The agent's side of the paramiko recordings spool: which files it trusts.

audit-shell runs as the bastion user and cannot write the root-only data
directory, so its paramiko backend writes `<tag>.chunks` into a spool
(default /var/spool/bastion-audit/recordings, root's, mode 1733: anyone may
create a file, nobody may list it or touch another's file). The ingest reads
those files in place. A recording counts only if it is a plain file with one
link, not a symlink, owned by the uid its start line names; the bastion user
is taken from that owner, never from the text. A file is read at most
RECORDING_MAX_BYTES far.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from agent import AgentError
from agent.intent_file import user_name
from parsers.chunk_log import SUFFIX as CHUNK_SUFFIX
from parsers.chunk_log import ChunkLogDecoder
from parsers.strace_lines import StraceDecoder
from tracer.session_log import (
    START_LINE_MAX_BYTES,
    SessionLogError,
    SessionStart,
    start_from_head,
)

STRACE_SUFFIX = ".strace"
RECORDING_MAX_BYTES = 8 << 30  # a session's recording is read this far, no further
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

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


def read_recording_start(path: Path) -> SessionStart | None:
    """The session a spool recording belongs to; None while its first line waits.

    The start line's uid must be the file's owner; the user name is the
    owner's, whatever the line says.
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
    return dataclasses.replace(start, user=user_name(st.st_uid))
