"""What the agent checks and prepares before it starts, each refusal one line.

Root, strace, the tracker script and the scope process; the data directory
and who may read it; room for one pidfd per session; who the control socket
serves.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import shutil
from pathlib import Path

from agent import AgentError
from agent.config import Config
from agent.files import Sharing
from tracer.discovery import read_start_ticks

FDS_PER_SESSION = 2  # a pidfd, and the moment a tracker and its ssh both count
FDS_SPARE = 256


class DaemonError(AgentError):
    """The agent cannot start."""


def check_can_run(config: Config) -> None:
    """Refuse to start without what tracing needs, naming what is missing."""
    if os.geteuid() != 0:
        raise DaemonError(
            "must run as root: strace attaches to other users' ssh processes"
        )
    if shutil.which("strace") is None:
        raise DaemonError("strace is not installed (apt-get install strace)")
    script = config.tracker_script
    if not (script.is_file() and os.access(script, os.X_OK)):
        raise DaemonError(f"tracker script {script} is missing or not executable")
    if config.scope_pid and read_start_ticks(config.scope_pid) is None:
        raise DaemonError(f"scope pid {config.scope_pid}: no such process")


def allow_fds(max_sessions: int) -> None:
    """Room for one pidfd per session: raise the soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_sessions * FDS_PER_SESSION + FDS_SPARE
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def prepare_data_dir(data_dir: Path, sharing: Sharing) -> None:
    """DATA_DIR: root only, or also readable by `read_group` (its logs never)."""
    try:
        sharing.directory(data_dir)
    except OSError as e:
        raise DaemonError(
            f"cannot create data directory {data_dir}: {e.strerror}"
        ) from e


def read_sharing(config: Config) -> Sharing:
    """Who besides root may read the store, the recordings and the status."""
    if not config.read_group:
        return Sharing()
    try:
        return Sharing(grp.getgrnam(config.read_group).gr_gid)
    except KeyError as e:
        raise DaemonError(f"read_group {config.read_group!r} is not a group") from e


def control_uids(config: Config) -> frozenset[int]:
    """Root, and the web's account: who the control socket serves."""
    if not config.web_intents_user:
        return frozenset({0})
    try:
        return frozenset({0, pwd.getpwnam(config.web_intents_user).pw_uid})
    except KeyError as e:
        raise DaemonError(
            f"web_intents_user {config.web_intents_user!r} is not an account"
        ) from e
