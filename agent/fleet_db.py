"""Connections to the fleet store (psycopg 3), and its errors as one line each.

Every program that reads or writes the fleet connects here: the DSN of the
`[fleet]` table or `--database`, the password from `password_file` (else
libpq's environment and ~/.pgpass), the session in UTC so that times come
back as the store writes them. A psycopg error becomes a FleetDbError that
names the database (never a password) and says whether trying again later
can help (`transient`: the server is away) or not (a refused password, a
row-level security refusal): the shipper waits on the first kind and reports
the second as a problem.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from agent import AgentError
from agent.fleet_config import FleetConfig

APPLICATION_NAME = "bastion-audit"
# Substrings of libpq's and the server's messages that mean "the server is
# away or going", not "you may not": connection refused, a timeout, a server
# shut down or restarting, a connection cut mid-transaction.
_TRANSIENT = (
    "connection refused",
    "timeout expired",
    "could not connect",
    "server closed the connection",
    "connection is lost",
    "connection is closed",
    "the database system is",
    "terminating connection",
    "no route to host",
    "network is unreachable",
    "could not receive data",
    "could not send data",
    "ssl syscall error",
    "consuming input failed",
    "connection timed out",
)
# SQLSTATE classes: 08 connection exception, 57 operator intervention.
_TRANSIENT_STATES = ("08", "57")


class FleetDbError(AgentError):
    """The fleet store could not be used; `transient`: worth trying again."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def describe(dsn: str) -> str:
    """`user@host:port/dbname` of a connection string, for messages."""
    try:
        words = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unreadable connection string)"
    user = str(words.get("user") or "")
    host = str(words.get("host") or words.get("hostaddr") or "localhost")
    port = str(words.get("port") or "5432")
    name = str(words.get("dbname") or user)
    return f"{user + '@' if user else ''}{host}:{port}/{name}"


def one_line(error: BaseException) -> str:
    """psycopg's message, the part that says what went wrong, on one line."""
    text = str(error).strip() or type(error).__name__
    if "FATAL:" in text:
        text = text.split("FATAL:", 1)[1]
    first = text.strip().splitlines()[0].strip()
    for prefix in ("connection failed: ",):
        first = first.removeprefix(prefix)
    return " ".join(first.split())


def explain(error: BaseException, where: str) -> FleetDbError:
    """A psycopg (or socket) error as a FleetDbError naming the database."""
    message = one_line(error)
    state = getattr(error, "sqlstate", None) or ""
    lower = str(error).lower()
    transient = (
        isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError, OSError))
        and (state[:2] in _TRANSIENT_STATES or any(t in lower for t in _TRANSIENT))
    ) or state[:2] in _TRANSIENT_STATES
    if "row-level security" in lower:
        message += " (row-level security: this role writes for another bastion)"
    return FleetDbError(f"fleet database {where}: {message}", transient=transient)


def connect(
    fleet: FleetConfig, dsn: str | None = None, *, autocommit: bool = False
) -> Any:
    """A connection to the fleet store; FleetDbError in one line if none."""
    conninfo = dsn or fleet.database
    where = describe(conninfo)
    kwargs: dict[str, Any] = {
        "connect_timeout": int(fleet.connect_timeout_s),
        "application_name": APPLICATION_NAME,
        "options": "-c timezone=UTC",
        "autocommit": autocommit,
    }
    password = fleet.password()
    if password is not None:
        kwargs["password"] = password
    try:
        return psycopg.connect(conninfo, **kwargs)
    except (psycopg.Error, OSError) as e:
        raise explain(e, where) from e
