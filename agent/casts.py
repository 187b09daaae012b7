"""Session recordings on disk: each session's terminal output as an asciicast v2 file.

DATA_DIR/casts/SESSION.cast (root only) is a header line and one event a
line: `[seconds since the session started, "o", text]` for output, `"r"` for
a resize (`"COLSxROWS"`) and `"m"` for a marker (a gap, a truncation).
Keystrokes are never recorded: what a user types with echo off (a password)
is not in the output, but it is in the keys. The agent's recorder
(agent/daemon/recorder.py) writes them; audit-export --cast and audit-replay
read them.
"""

from __future__ import annotations

from pathlib import Path

from agent import AgentError

CASTS_DIR = "casts"
CAST_SUFFIX = ".cast"
IDLE_TIME_LIMIT_S = 3.0  # players shorten longer pauses (a gap of hours, say)


class CastError(AgentError):
    """A recording that cannot be found or read."""


def cast_path(data_dir: Path, session_id: str) -> Path:
    return data_dir / CASTS_DIR / f"{session_id}{CAST_SUFFIX}"


def read_cast(path: Path) -> bytes:
    """The recording's complete lines (a live one may have a line half written)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise CastError(f"no recording at {path}") from e
    except PermissionError as e:
        raise CastError(
            f"cannot read recording {path}: permission denied (it is root's)"
        ) from e
    end = data.rfind(b"\n")
    if end < 0:
        raise CastError(f"recording {path} has no header yet")
    return data[: end + 1]
