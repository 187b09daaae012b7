"""Agent configuration: defaults, then a TOML file, then command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.fleet_config import BASTION_RE, FleetConfig, fleet_table
from agent.highlight import HighlightError, HighlightRule, active_rules, parse_rules
from agent.locks import DEFAULT_LOCKS_DIR
from agent.rules import DEFAULT_RULES_PATH, RuleError, RuleSet, load_rules
from agent.syslog import FACILITIES, SyslogError, parse_target
from agent.toml_table import Check, Where, absolute_path, read_toml, table
from tracer import Mode

DEFAULT_CONFIG_PATH = Path("/etc/bastion-audit/agent.toml")
DEFAULT_DATA_DIR = Path("/var/lib/bastion-audit")
# audit-shell's connection records (agent/intent_file.py); outside DATA_DIR (0700)
# so that the bastion users can drop files into it.
DEFAULT_INTENTS_DIR = Path("/var/spool/bastion-audit/intents")
# audit-shell's paramiko recordings (parsers/chunk_log.py), the same kind of spool.
DEFAULT_RECORDINGS_DIR = Path("/var/spool/bastion-audit/recordings")
CONTROL_SOCKET = "control.sock"  # in DATA_DIR, unless control_socket says


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
    # ssh clients without a tag: on record as `untagged` (false), or traced
    # like tagged ones under a tag of their own, never cut (true).
    trace_untagged: bool = False
    intents_dir: Path = DEFAULT_INTENTS_DIR
    recordings_dir: Path = DEFAULT_RECORDINGS_DIR
    # The account audit-web runs as: its connection records may name another
    # bastion user (the web user). "": only root's may (README: audit-web).
    web_intents_user: str = ""
    # The accounts audit-shell runs as (its ForceCommand accounts): the only
    # ones, besides root and web_intents_user, whose connection records count.
    shell_users: tuple[str, ...] = ("zxy",)
    # What one uid's files in the spools may cost (agent/daemon/spool_guard.py):
    # records or recordings in flight at once, and new sessions per second.
    spool_max_per_uid: int = 256
    spool_rate_per_uid_s: float = 5.0
    # A group whose members may read the store, the recordings and the status
    # (audit-web's account, for the console); never the raw logs. "": root only.
    read_group: str = ""
    # The daemon's control socket (agent/control.py): root and web_intents_user
    # only. None: DATA_DIR/control.sock.
    control_socket: Path | None = None
    # strict: a tagged ssh that cannot be traced is ended; permissive: it goes
    # on untraced and its session shows the gap.
    mode: Mode = Mode.STRICT
    attach_deadline_s: float = 5.0  # from discovery to strace attached
    max_sessions: int = 1000  # live traced sessions at once
    max_new_sessions_per_s: float = 50.0  # straces started per second
    # Disk (agent/daemon/disk.py): a session's log past log_max_bytes gets the
    # mode's verdict; below disk_reserve_bytes free, new sessions get it, and
    # below half of that, the live ones too.
    log_max_bytes: int = 2 << 30
    disk_reserve_bytes: int = 256 << 20
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
    # This bastion's name in every record and event, and its fleet id unless
    # [fleet] names another; "": [fleet]'s bastion, else the host name.
    bastion: str = ""
    # Command rules and their actions (agent/rules.py); missing: none.
    rules_file: Path = DEFAULT_RULES_PATH
    locks_dir: Path = DEFAULT_LOCKS_DIR  # the lock action's files (agent/locks.py)
    # Retention (agent/daemon/retention.py), in days; 0 keeps forever. Sessions
    # on legal hold (agent/holds.py) are never pruned.
    retention_days: float = 0.0  # ended sessions, their commands and recordings
    recording_retention_days: float = 0.0  # recordings alone, sooner (0: with it)
    quarantine_retention_days: float = 0.0  # files in DATA_DIR/quarantine
    # [fleet]: ship every record to PostgreSQL too (agent/fleet_config.py).
    fleet: FleetConfig = FleetConfig()

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def bastion_name(self) -> str:
        return self.bastion or self.fleet.bastion_id

    @property
    def control_path(self) -> Path:
        return self.control_socket or self.data_dir / CONTROL_SOCKET


MODE_MEANING = {
    Mode.STRICT: "a tagged ssh that cannot be traced is ended",
    Mode.PERMISSIVE: "a tagged ssh that cannot be traced goes on, its gap marked",
}


def scope_text(scope_pid: int) -> str:
    """What an agent with this scope reaches (its start line, audit-agent status)."""
    if scope_pid:
        return f"only the ssh clients under pid {scope_pid}"
    return "every tagged ssh on this machine"


def start_lines(config: Config) -> list[str]:
    """What the agent says first: where it writes, its mode, what it reaches."""
    scope = scope_text(config.scope_pid)
    if not config.scope_pid:
        scope += " (--scope-pid PID: only the ssh clients under that process)"
    return [
        f"data dir {config.data_dir}",
        f"mode {config.mode}: {MODE_MEANING[config.mode]}",
        f"scope: {scope}",
    ]


_LIMITS: dict[str, tuple[float, float]] = {
    "poll_interval_s": (0.01, 10.0),
    "flush_interval_s": (0.01, 1.0),
    "log_retention_s": (0.0, 10 * 365 * 86400.0),
    "attach_deadline_s": (0.1, 60.0),
    "max_new_sessions_per_s": (1.0, 10_000.0),
    "status_interval_s": (0.1, 60.0),
    "spool_max_per_uid": (1, 100_000),
    "spool_rate_per_uid_s": (0.1, 10_000.0),
    "retention_days": (0.0, 36500.0),
    "recording_retention_days": (0.0, 36500.0),
    "quarantine_retention_days": (0.0, 36500.0),
}


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
        values = read_toml(path, ConfigError)
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
    where = Where(source, error_class=ConfigError)
    config = table(Config, values, where, limits=_LIMITS, checks=_CHECKS)
    if config.bastion and not config.fleet.bastion:  # one name, everywhere
        fleet = dataclasses.replace(config.fleet, bastion=config.bastion)
        config = dataclasses.replace(config, fleet=fleet)
    return config


def config_source(path: Path | None) -> Path | None:
    """The file load_config(path) reads, if any (for messages about it)."""
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return path


def _byte_count(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error("must be a whole number of bytes")
    if not 4096 <= value <= 1 << 40:
        raise where.error(f"must be between 4096 and {1 << 40}")
    return value


def _optional_path(value: Any, where: Where) -> Path | None:
    if value is None or value == "":
        return None  # TOML has no null: "" means off
    return absolute_path(value, where)


def _syslog_target(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.error("must be a string like udp://host:514")
    if value:
        try:
            parse_target(value)
        except SyslogError as e:
            raise ConfigError(f"{where.file}: {where.key}: {e}") from e
    return value


def _facility(value: Any, where: Where) -> str:
    if not isinstance(value, str) or value not in FACILITIES:
        raise where.error(f"must be one of {', '.join(sorted(FACILITIES))}")
    return value


def _account_name(kind: str) -> Check:
    """A user or group name as useradd and groupadd take them, or ""."""

    def check(value: Any, where: Where) -> str:
        if not isinstance(value, str) or not re.fullmatch(
            r"[a-z_][a-z0-9_.-]{0,31}|", value
        ):
            raise where.error(f"must be a {kind} name")
        return value

    return check


def _user_names(value: Any, where: Where) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise where.error("must be a list of user names")
    for name in value:
        if not name or _account_name("user")(name, where) != name:
            raise where.error("must be a list of user names")
    return tuple(value)


def host_name(value: Any, where: Where) -> str:
    """A bastion's name, as the fleet store takes it, or "" for this machine's."""
    if not isinstance(value, str) or not (value == "" or BASTION_RE.fullmatch(value)):
        raise where.error(f"must be a name matching {BASTION_RE.pattern}")
    return value


def _highlight(value: Any, where: Where) -> tuple[HighlightRule, ...]:
    try:
        return parse_rules(value, where.file)
    except HighlightError as e:
        raise ConfigError(str(e)) from e


_CHECKS: dict[str, Check] = {
    "log_max_bytes": _byte_count,
    "disk_reserve_bytes": _byte_count,
    "recording_max_bytes": _byte_count,
    "recording_burst_max_bytes": _byte_count,
    "events_file": _optional_path,
    "events_syslog": _syslog_target,
    "events_syslog_facility": _facility,
    "highlight": _highlight,
    "web_intents_user": _account_name("user"),
    "shell_users": _user_names,
    "read_group": _account_name("group"),
    "control_socket": _optional_path,
    "bastion": host_name,
    "fleet": fleet_table,
}


def rules_of(config: Config) -> RuleSet:
    """The rules file's rules, then agent.toml's highlight rules and the built-in ones.

    The default file may be missing (no rules); a file named in agent.toml may not.
    """
    try:
        return load_rules(
            config.rules_file,
            active_rules(config.highlight, config.highlight_builtin),
            must_exist=config.rules_file != DEFAULT_RULES_PATH,
        )
    except RuleError as e:
        raise ConfigError(str(e)) from e


def add_data_dir_options(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --config, for every program that reads the agent's data."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the agent's data directory (default: data_dir of the configuration, "
        f"else {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the agent's TOML configuration (default /etc/bastion-audit/agent.toml "
        "if it exists)",
    )


def reading_config(args: argparse.Namespace) -> Config:
    """The configuration a reading program works with; --data-dir wins."""
    config = load_config(getattr(args, "config", None))
    if args.data_dir is None:
        args.data_dir = config.data_dir
    return config
