"""agent.toml's `[fleet]` table: where this bastion ships its record, and how.

    [fleet]
    database = "postgresql://agent_db1@fleet.example.org/audit?sslmode=verify-full"
    password_file = "/etc/bastion-audit/fleet.password"
    bastion = "db1"

`database` is a libpq connection string (a URI or `key=value` words; libpq's
environment, PGPASSWORD, PGPASSFILE and ~/.pgpass, applies as usual). It
must not hold a password: that comes from `password_file` (the password
alone, a file no one but its owner may read) or from libpq's environment,
never from a command line, where `ps` shows it to everyone.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.toml_table import Where, absolute_path, table

BASTION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class FleetConfigError(AgentError):
    """A `[fleet]` setting that cannot be used."""


@dataclass(frozen=True)
class FleetConfig:
    """The fleet store's settings (README: The fleet store); off without database."""

    database: str = ""  # libpq connection string; "" ships nothing
    password_file: Path | None = None  # the password alone, 0600
    bastion: str = ""  # this bastion's id in the fleet; "": the host name
    migrate_on_start: bool = False  # the agent applies the migrations on start
    batch_size: int = 1000  # records per transaction
    max_lag_s: float = 300.0  # unshipped this long: the agent is unhealthy
    max_lag_records: int = 100_000  # or this many records behind
    connect_timeout_s: float = 5.0
    retry_interval_s: float = 5.0  # an unreachable database is tried again this often

    @property
    def enabled(self) -> bool:
        return bool(self.database)

    @property
    def bastion_id(self) -> str:
        return self.bastion or socket.gethostname().split(".")[0]

    def password(self) -> str | None:
        """The password_file's password, or None (libpq's own sources then)."""
        if self.password_file is None:
            return None
        return read_password_file(self.password_file)


_LIMITS: dict[str, tuple[float, float]] = {
    "batch_size": (1, 100_000),
    "max_lag_s": (1.0, 30 * 86400.0),
    "max_lag_records": (1, 1 << 40),
    "connect_timeout_s": (1.0, 300.0),
    "retry_interval_s": (0.1, 3600.0),
}


def read_password_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise FleetConfigError(
            f"cannot read fleet password file {path}: {e.strerror}"
        ) from e
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FleetConfigError(
                f"fleet password file {path} may be read by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 it"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").strip("\r\n")


def check_database(value: Any, where: Where) -> str:
    """A libpq connection string without a password in it."""
    if not isinstance(value, str):
        raise where.error("must be a PostgreSQL connection string")
    if not value:
        return value
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        words = conninfo_to_dict(value)
    except ProgrammingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise where.error(f"is not a PostgreSQL connection string: {reason}") from e
    if words.get("password"):
        raise where.error(
            "holds a password: put it in the password_file beside it, or in "
            "PGPASSWORD, instead"
        )
    return value


def check_password_file(value: Any, where: Where) -> Path | None:
    if value is None or value == "":
        return None
    return absolute_path(value, where)


def _bastion(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not (value == "" or BASTION_RE.fullmatch(value)):
        raise where.error(f"must match {BASTION_RE.pattern}")
    return value


def fleet_table(value: Any, where: Where) -> FleetConfig:
    """The `[fleet]` table (a check for agent/config.py's Config.fleet)."""
    if isinstance(value, FleetConfig):
        return value
    return table(
        FleetConfig,
        value,
        where,
        limits=_LIMITS,
        checks={
            "database": check_database,
            "password_file": check_password_file,
            "bastion": _bastion,
        },
    )
