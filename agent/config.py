"""Agent configuration: defaults, then a TOML file, then command-line flags."""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.highlight import HighlightError, HighlightRule, parse_rules
from tracer import Mode

DEFAULT_CONFIG_PATH = Path("/etc/bastion-audit/agent.toml")
DEFAULT_DATA_DIR = Path("/var/lib/bastion-audit")
# audit-shell's connection records (agent/intents.py); outside DATA_DIR (0700)
# so that the bastion users can drop files into it.
DEFAULT_INTENTS_DIR = Path("/var/spool/bastion-audit/intents")
# audit-shell's paramiko recordings (parsers/chunk_log.py), the same kind of spool.
DEFAULT_RECORDINGS_DIR = Path("/var/spool/bastion-audit/recordings")


class ConfigError(AgentError):
    """A configuration file or value that cannot be used."""


def default_tracker_script() -> Path:
    """session_tracker.sh as installed with the package, else in the source tree.

    setup.cfg installs it as data_files into the venv; an editable install
    (make run, make test) installs no data files, so the checkout's copy counts.
    """
    installed = Path(sys.prefix) / "share" / "bastion-audit" / "session_tracker.sh"
    if installed.exists():
        return installed
    return Path(__file__).resolve().parents[1] / "scripts" / "session_tracker.sh"


@dataclass(frozen=True)
class Config:
    """Every setting of the agent, with its default."""

    data_dir: Path = DEFAULT_DATA_DIR
    poll_interval_s: float = 0.1  # how often new processes are looked for
    flush_interval_s: float = 0.2  # store writes are batched this long (<= 1 s)
    log_retention_s: float = 0.0  # keep ingested logs of closed sessions this long
    tracker_script: Path = dataclasses.field(default_factory=default_tracker_script)
    scope_pid: int = 0  # audit only ssh processes descended from this pid (0: all)
    intents_dir: Path = DEFAULT_INTENTS_DIR
    recordings_dir: Path = DEFAULT_RECORDINGS_DIR
    # The account audit-web runs as: its connection records may name another
    # bastion user (the web user). "": only root's may (README: audit-web).
    web_intents_user: str = ""
    # strict: a tagged ssh that cannot be traced is ended; permissive: it goes
    # on untraced and its session shows the gap.
    mode: Mode = Mode.STRICT
    attach_deadline_s: float = 5.0  # from discovery to strace attached
    max_sessions: int = 1000  # live traced sessions at once
    max_new_sessions_per_s: float = 50.0  # straces started per second
    # Operator experience (README: Configuration).
    status_interval_s: float = 2.0  # how often DATA_DIR/status.json is rewritten
    recording: bool = True  # keep each session's output as an asciicast
    recording_max_bytes: int = 32 << 20  # per session, then the recording stops
    recording_burst_max_bytes: int = 2 << 20  # output without a keystroke in between
    events_file: Path | None = None  # JSON Lines of session and command events
    events_syslog: str = ""  # udp://HOST:PORT, tcp://HOST:PORT or unix:/dev/log
    events_syslog_facility: str = "authpriv"
    highlight: tuple[HighlightRule, ...] = ()  # audit-tail's own risky commands
    highlight_builtin: bool = True  # and the built-in ones (agent/highlight.py)

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"


_LIMITS: dict[str, tuple[float, float]] = {
    "poll_interval_s": (0.01, 10.0),
    "flush_interval_s": (0.01, 1.0),
    "log_retention_s": (0.0, 10 * 365 * 86400.0),
    "attach_deadline_s": (0.1, 60.0),
    "max_new_sessions_per_s": (1.0, 10_000.0),
    "status_interval_s": (0.1, 60.0),
}
_CHOICES: dict[str, tuple[str, ...]] = {"mode": tuple(Mode)}


def load_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read `path` (or the default file, if present) and apply `overrides`."""
    values: dict[str, Any] = {}
    source = "command line"
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                values.update(tomllib.load(f))
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid config file {path}: {e}") from e
    config = _build(values, source)
    if overrides:
        config = _build(
            {
                **_as_values(config),
                **{k: v for k, v in overrides.items() if v is not None},
            },
            "command line",
        )
    return config


def _as_values(config: Config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _build(values: Mapping[str, Any], source: str) -> Config:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {key!r}")
        if key in _CHECKS:
            kwargs[key] = _CHECKS[key](source, key, value)
            continue
        default = getattr(Config(), key)
        if isinstance(default, Path):
            if not isinstance(value, (str, Path)) or not str(value):
                raise ConfigError(f"{source}: {key} must be a path")
            value = Path(value)
            if not value.is_absolute():
                raise ConfigError(
                    f"{source}: {key} must be an absolute path, not {value}"
                )
        elif isinstance(default, str):
            if value not in _CHOICES[key]:
                choices = " or ".join(_CHOICES[key])
                raise ConfigError(f"{source}: {key} must be {choices}, not {value!r}")
            value = Mode(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{source}: {key} must be a whole number >= 0")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                unit = " of seconds" if key.endswith("_s") else ""
                raise ConfigError(f"{source}: {key} must be a number{unit}")
            low, high = _LIMITS[key]
            if not low <= value <= high:
                raise ConfigError(f"{source}: {key} must be between {low} and {high}")
            value = float(value)
        kwargs[key] = value
    return Config(**kwargs)


def config_source(path: Path | None) -> Path | None:
    """The file load_config(path) reads, if any (for messages about it)."""
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return path


def _bool(source: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false")
    return value


def _byte_count(source: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: {key} must be a whole number of bytes")
    if not 4096 <= value <= 1 << 40:
        raise ConfigError(f"{source}: {key} must be between 4096 and {1 << 40}")
    return value


def _optional_path(source: str, key: str, value: Any) -> Path | None:
    if value is None or value == "":
        return None  # TOML has no null: "" means off
    if not isinstance(value, (str, Path)):
        raise ConfigError(f"{source}: {key} must be a path")
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(f"{source}: {key} must be an absolute path, not {path}")
    return path


def _syslog_target(source: str, key: str, value: Any) -> str:
    from agent.syslog import SyslogError, parse_target

    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string like udp://host:514")
    if value:
        try:
            parse_target(value)
        except SyslogError as e:
            raise ConfigError(f"{source}: {key}: {e}") from e
    return value


def _facility(source: str, key: str, value: Any) -> str:
    from agent.syslog import FACILITIES

    if not isinstance(value, str) or value not in FACILITIES:
        raise ConfigError(
            f"{source}: {key} must be one of {', '.join(sorted(FACILITIES))}"
        )
    return value


def _user_name(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(
        r"[a-z_][a-z0-9_.-]{0,31}|", value
    ):
        raise ConfigError(f"{source}: {key} must be a user name")
    return value


def _highlight(source: str, key: str, value: Any) -> tuple[HighlightRule, ...]:
    try:
        return parse_rules(value, source)
    except HighlightError as e:
        raise ConfigError(str(e)) from e


_CHECKS: dict[str, Callable[[str, str, Any], Any]] = {
    "recording": _bool,
    "recording_max_bytes": _byte_count,
    "recording_burst_max_bytes": _byte_count,
    "events_file": _optional_path,
    "events_syslog": _syslog_target,
    "events_syslog_facility": _facility,
    "highlight": _highlight,
    "highlight_builtin": _bool,
    "web_intents_user": _user_name,
}
