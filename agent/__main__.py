"""audit-agent: the daemon (`run`, agent/daemon/), its health (`status`, a tool),
the fleet store's schema (`fleet-init`), and a lock rule's lock taken back
(`unlock`).

Also root's commands on the data directory (agent/daemon/admin.py): `key`
(the public key that verifies the record), `prune` (retention on demand,
through the running agent), `hold` and `unhold` (legal holds).

The options are defined here; each subcommand's body imports only its own
room, so `audit-agent status` loads nothing of the daemon and `audit-agent
run` nothing of the tools.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from agent.config import add_data_dir_options
from agent.exits import run_main
from agent.status_file import DEFAULT_MAX_LAG_BYTES
from agent.version import add_version_option
from tracer import Mode

PROG = "audit-agent"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Audit tagged ssh sessions."
    )
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent in the foreground")
    run.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML configuration file"
    )
    run.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="where logs and store live"
    )
    run.add_argument(
        "--poll-interval",
        type=float,
        metavar="S",
        dest="poll_interval_s",
        help="seconds between looks for new ssh processes (default 0.1)",
    )
    run.add_argument(
        "--mode",
        choices=tuple(Mode),
        help="strict (default): end a tagged ssh that cannot be traced; "
        "permissive: let it go on, marked with the gap",
    )
    run.add_argument(
        "--scope-pid",
        type=int,
        metavar="PID",
        dest="scope_pid",
        help="audit only ssh processes descended from PID (default: all)",
    )
    run.add_argument(
        "--events-file",
        type=Path,
        metavar="FILE",
        help="append session and command events here as JSON Lines",
    )
    run.add_argument(
        "--syslog",
        metavar="URL",
        dest="events_syslog",
        help="send the events to syslog: udp://HOST:PORT, tcp://HOST:PORT, unix:PATH",
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="log debugging detail"
    )
    status = commands.add_parser(
        "status",
        help="is the agent healthy (exit 0) or not (exit 4), and what is it doing",
    )
    add_data_dir_options(status)
    status.add_argument("--json", action="store_true", help="the status as JSON")
    status.add_argument(
        "--max-lag",
        type=int,
        default=DEFAULT_MAX_LAG_BYTES,
        metavar="BYTES",
        help="ingest lag above this is unhealthy (default 64 MiB)",
    )
    key = commands.add_parser(
        "key", help="print the public key that verifies this bastion's record"
    )
    add_data_dir_options(key)
    prune = commands.add_parser(
        "prune",
        help="prune what retention_days keeps no longer, now (by the running agent)",
    )
    add_data_dir_options(prune)
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would go; remove nothing"
    )
    for name, text in (
        (
            "hold",
            "keep a session, or every session of a tag, from being pruned "
            "(without one: list the holds)",
        ),
        ("unhold", "lift a hold"),
    ):
        sub = commands.add_parser(name, help=text)
        add_data_dir_options(sub)
        sub.add_argument("session", nargs="?", metavar="SESSION", help="a session id")
        sub.add_argument("--tag", metavar="TAG", help="every session of this tag")
        if name == "hold":
            sub.add_argument(
                "--reason", metavar="TEXT", help="why (kept with the hold)"
            )
    init = commands.add_parser(
        "fleet-init",
        help="create or upgrade the fleet store's schema in PostgreSQL",
    )
    init.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML configuration file"
    )
    init.add_argument(
        "--database",
        metavar="DSN",
        help="libpq connection string (default: [fleet] database of the "
        "configuration); the password from password_file or PGPASSWORD",
    )
    unlock = commands.add_parser(
        "unlock", help="let USER open sessions again after a lock rule locked them"
    )
    unlock.add_argument("user", metavar="USER", help="the bastion user")
    unlock.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML configuration file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.command == "status":
            from agent.config import reading_config
            from agent.tools.status_view import show_status

            reading_config(args)
            return show_status(args.data_dir, args.json, args.max_lag)
        if args.command == "unlock":
            from agent.daemon.cli import unlock

            return unlock(args)
        if args.command in ("key", "prune", "hold", "unhold"):
            from agent.daemon import admin

            command: Callable[[argparse.Namespace], int] = {
                "key": admin.show_key,
                "prune": admin.prune,
                "hold": admin.hold,
                "unhold": admin.unhold,
            }[args.command]
            return command(args)
        if args.command == "fleet-init":
            from agent.daemon.cli import fleet_init

            return fleet_init(args)
        from agent.daemon.cli import run

        return run(PROG, args)

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
