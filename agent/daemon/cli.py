"""`audit-agent run`: the daemon in the foreground (its options, its boundary);
`audit-agent fleet-init`: the fleet store's schema; `audit-agent unlock USER`:
a lock rule's lock taken back."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from agent import AgentError
from agent.config import load_config
from agent.control import ControlClient, ControlError
from agent.daemon.agent import Agent, stop_signals
from agent.escape import LogFormatter
from agent.exits import ExitStatus
from agent.fleet_config import FleetConfigError
from agent.locks import lock_path, remove_lock


def setup_logging(prog: str, verbose: bool = False) -> None:
    """One line per message: file names, hosts and tags come from users."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(f"{prog}: %(levelname)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler]
    )


def run(prog: str, args: argparse.Namespace) -> int:
    """Configuration from the file, then the flags; run until stopped."""
    config = load_config(
        args.config,
        {
            "data_dir": args.data_dir.absolute() if args.data_dir else None,
            "poll_interval_s": args.poll_interval_s,
            "scope_pid": args.scope_pid,
            "mode": args.mode,
            "events_file": args.events_file.absolute() if args.events_file else None,
            "events_syslog": args.events_syslog,
        },
    )
    setup_logging(prog, args.verbose)
    agent = Agent(config)
    with stop_signals(agent.stop_event, agent.wake):
        agent.run()
    return ExitStatus.SUCCESS


def fleet_init(args: argparse.Namespace) -> int:
    """Apply the fleet schema's missing migrations; say where it stands."""
    from agent.fleet_db import FleetDbError, connect, describe, explain
    from agent.fleet_schema import SCHEMA_VERSION, migrate

    fleet = load_config(args.config).fleet
    dsn = args.database or fleet.database
    if not dsn:
        raise FleetConfigError(
            "no fleet database: give --database or [fleet] database in agent.toml"
        )
    if args.database:
        from agent.fleet_config import check_database
        from agent.toml_table import Where

        check_database(dsn, Where("--database", error_class=FleetConfigError))
    conn = connect(fleet, dsn, autocommit=True)
    try:
        applied = migrate(conn)
    except FleetDbError:
        raise
    except Exception as e:
        import psycopg

        if isinstance(e, psycopg.Error):
            raise explain(e, describe(dsn)) from e
        raise
    finally:
        conn.close()
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to do"
    print(f"fleet database {describe(dsn)}: schema version {SCHEMA_VERSION} ({done})")
    return ExitStatus.SUCCESS


class UnlockError(AgentError):
    """An unlock that cannot be done."""


def unlock(args: argparse.Namespace) -> int:
    """Let USER in again: through the running agent's control socket (the
    access log then says who), else by removing the lock file (root's)."""
    config = load_config(args.config)
    if lock_path(config.locks_dir, args.user) is None:
        raise UnlockError(f"{args.user!r} is not a user name")
    if os.geteuid() != 0:
        raise UnlockError("must run as root: the locks are root's")
    actor = os.environ.get("SUDO_USER") or "root"
    try:
        reply = ControlClient(config.control_path).unlock(args.user, actor)
    except ControlError:
        reply = None  # no agent running: the file itself
    if reply is not None and reply.ok:
        print(reply.message)
    else:
        lock = remove_lock(config.locks_dir, args.user)
        print(
            f"{args.user} unlocked (was {lock.describe()})"
            if lock
            else f"{args.user} was not locked"
        )
    sys.stdout.flush()
    return ExitStatus.SUCCESS
