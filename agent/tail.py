"""audit-tail: the last commands, then new ones as the agent stores them."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any

from agent.cli import ExitStatus, Filter, add_reading_options, printable, run_cli
from agent.reader import StoreFollower, check_data_dir
from agent.records import Command, Session

PROG = "audit-tail"
FOLLOW_INTERVAL_S = 0.25


def fields(command: Command, session: Session | None) -> tuple[str, str, str, str, str]:
    """time, bastion user, remote user@host, session, command: all printable."""
    if session is None:
        who, where = "?", "?"
    else:
        who = session.bastion_user
        where = f"{session.remote_user}@{session.host}"
        if session.port not in (None, 22):
            where += f":{session.port}"
    return (
        command.time,
        printable(who),
        printable(where),
        printable(command.session),
        printable(command.command),
    )


class PlainPrinter:
    """Tab-separated lines, for pipes and files."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def show(self, rows: list[tuple[Command, Session | None]]) -> None:
        for command, session in rows:
            time_, who, where, sid, text = fields(command, session)
            self.out.write(f"{time_}\t{who} → {where}\t{sid}\t{text}\n")
        self.out.flush()


class RichPrinter:
    """Aligned, colored rows for a terminal (rich is imported only here)."""

    PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")

    def __init__(self, out: IO[str]) -> None:
        from rich.console import Console

        self.console = Console(file=out, highlight=False)
        self.header_done = False

    def _color(self, name: str) -> str:
        return self.PALETTE[sum(name.encode()) % len(self.PALETTE)]

    def show(self, rows: list[tuple[Command, Session | None]]) -> None:
        from rich.table import Table
        from rich.text import Text

        if not rows:
            return
        table = Table(box=None, show_header=not self.header_done, pad_edge=False)
        table.add_column("time", no_wrap=True, style="dim", width=23)
        table.add_column("who", no_wrap=True, width=36)
        table.add_column("session", no_wrap=True, width=18)
        table.add_column("command", overflow="fold")
        for command, session in rows:
            time_, who, where, sid, text = fields(command, session)
            people = Text(who, style=self._color(who))
            people.append(" → ")
            people.append(where, style=self._color(where))
            # Text, never markup: a command like "[red]" is shown as typed.
            table.add_row(time_, people, Text(sid), Text(text, style="bold"))
        self.console.print(table)
        self.header_done = True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Watch audited commands live."
    )
    add_reading_options(parser)
    parser.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="show the last N commands first (default 10)",
    )
    parser.add_argument("--no-follow", action="store_true", help="print and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        selection = Filter.from_args(args)
        check_data_dir(args.data_dir)
        printer: Any = (
            RichPrinter(sys.stdout) if sys.stdout.isatty() else PlainPrinter(sys.stdout)
        )
        follower = StoreFollower(args.data_dir)
        reported = 0

        def matching(commands: list[Command]) -> list[tuple[Command, Session | None]]:
            rows = []
            for command in commands:
                session = follower.sessions.get(command.session)
                if selection.command_matches(command, session):
                    rows.append((command, session))
            return rows

        first = matching(follower.poll())
        printer.show(first[-args.lines :] if args.lines > 0 else [])
        while not args.no_follow:
            for error in follower.errors[reported:]:
                print(f"{PROG}: warning: {error}", file=sys.stderr)
            reported = len(follower.errors)
            time.sleep(FOLLOW_INTERVAL_S)
            printer.show(matching(follower.poll()))
        for error in follower.errors[reported:]:
            print(f"{PROG}: warning: {error}", file=sys.stderr)
        return ExitStatus.PARTIAL if follower.errors else ExitStatus.SUCCESS

    return run_cli(PROG, body, ctrl_c_status=ExitStatus.SUCCESS)


if __name__ == "__main__":
    sys.exit(main())
