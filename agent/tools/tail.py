"""audit-tail: the last commands, then new ones as the agent stores them.

On a terminal: aligned rows colored by user and host, risky commands
(agent/highlight.py) in red with the rule's name, and a status line kept under
the rows (is the agent running, how many live sessions). Into a pipe:
tab-separated lines. With --json: JSON Lines, the export's records.

It reads the store, never the agent, so it goes on while the agent restarts
and as shards are rewritten or begin. With --database (or a [fleet] table)
it follows the whole fleet: the fleet store's notifications say what to
fetch. Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from agent.config import ConfigError, config_source
from agent.exits import ExitStatus, run_main
from agent.export_record import JsonRecords
from agent.highlight import HighlightRule, active_rules, matching
from agent.reading import Reader, Selection
from agent.records import Command, Session, iso
from agent.status_file import StatusError, agent_running, read_status
from agent.tools.options import (
    add_reading_options,
    open_reading,
    printable,
    selection_from_args,
)

PROG = "audit-tail"
FOLLOW_INTERVAL_S = 0.25
STATUS_REFRESH_S = 1.0

Rows = list[tuple[Command, Session | None]]


def fields(command: Command, session: Session | None) -> tuple[str, str, str, str, str]:
    """time, bastion user, remote user@host, session, command: all printable."""
    sid = command.session
    if session is None:
        who, where = "?", "?"
    else:
        if session.bastion:
            sid = f"{session.bastion}/{sid}"
        who = session.bastion_user
        where = f"{session.remote_user}@{session.host}"
        if session.port not in (None, 22):
            where += f":{session.port}"
    return (
        command.time,
        printable(who),
        printable(where),
        printable(sid),
        printable(command.command),
    )


class PlainPrinter:
    """Tab-separated lines, for pipes and files."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def show(self, rows: Rows) -> None:
        for command, session in rows:
            time_, who, where, sid, text = fields(command, session)
            self.out.write(f"{time_}\t{who} → {where}\t{sid}\t{text}\n")
        self.out.flush()

    def footer(self, text: str, healthy: bool) -> None:
        pass

    def close(self) -> None:
        pass


class JsonPrinter(PlainPrinter):
    """JSON Lines, exactly the records `audit-export --format jsonl` writes."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out)
        self.text = JsonRecords().text

    def show(self, rows: Rows) -> None:
        for command, session in rows:
            self.out.write(self.text(command, session) + "\n")
        self.out.flush()


class RichPrinter:
    """Aligned, colored rows and a live status line (rich is imported only here)."""

    PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")

    def __init__(self, out: IO[str], rules: Sequence[HighlightRule]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, highlight=False)
        self.rules = rules
        self.header_done = False
        self.shown = 0
        self.flagged = 0
        # Rows are printed above it; no refresh thread: we refresh by hand.
        self.live = Live(
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def _color(self, name: str) -> str:
        return self.PALETTE[sum(name.encode()) % len(self.PALETTE)]

    def show(self, rows: Rows) -> None:
        from rich.table import Table
        from rich.text import Text

        if not rows:
            return
        table = Table(box=None, show_header=not self.header_done, pad_edge=False)
        table.add_column("time", no_wrap=True, style="dim", width=24)
        table.add_column("who", no_wrap=True, width=36)
        table.add_column("session", no_wrap=True, width=18)
        table.add_column("command", overflow="fold")
        for command, session in rows:
            time_, who, where, sid, text = fields(command, session)
            people = Text(who, style=self._color(who))
            people.append(" → ")
            people.append(where, style=self._color(where))
            # Text, never markup: a command like "[red]" is shown as typed.
            hits = matching(self.rules, command.command)
            line = Text(text, style=hits[0].style if hits else "bold")
            if hits:
                self.flagged += 1
                line.append("  ⚠ " + ", ".join(r.name for r in hits), style="red")
            table.add_row(time_, people, Text(sid), line)
        self.live.console.print(table)
        self.header_done = True
        self.shown += len(rows)

    def footer(self, text: str, healthy: bool) -> None:
        from rich.text import Text

        line = Text("● " if healthy else "○ ", style="green" if healthy else "red")
        line.append(text, style="" if healthy else "yellow")
        line.append(
            f" · {self.shown} commands shown, {self.flagged} flagged · Ctrl-C to quit",
            style="dim",
        )
        self.live.update(line, refresh=True)

    def close(self) -> None:
        self.live.stop()


def agent_line(data_dir: Path) -> tuple[str, bool]:
    """What the status line says about the agent, and whether that is good."""
    try:
        status = read_status(data_dir)
    except StatusError as e:
        return f"agent status unreadable: {e}", False
    if status is None:
        return "no agent has run on this data directory yet: waiting", False
    if not agent_running(status):
        return f"agent not running (last seen {iso(status.updated_at)}): waiting", False
    live = len(status.sessions)
    return (
        f"agent running (pid {status.pid}) · {live} live session"
        + ("s" if live != 1 else ""),
        True,
    )


def check_styles(rules: Sequence[HighlightRule], source: Path | None) -> None:
    """A style rich cannot read is a configuration error naming the rule."""
    from rich.errors import StyleSyntaxError
    from rich.style import Style

    for i, rule in enumerate(rules):
        try:
            Style.parse(rule.style)
        except StyleSyntaxError as e:
            where = source or "command line"
            raise ConfigError(f"{where}: highlight[{i}].style: {e}") from e


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
    parser.add_argument(
        "--since",
        metavar="T",
        help="first show every command since T (ISO 8601 or a time ago: 30m, 2h)",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON Lines (the export's records)"
    )
    parser.add_argument("--no-follow", action="store_true", help="print and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        config, reader = open_reading(args)
        check_styles(config.highlight, config_source(args.config))
        selection = selection_from_args(args)
        printer: Any
        if args.json:
            printer = JsonPrinter(sys.stdout)
        elif sys.stdout.isatty():
            rules = active_rules(config.highlight, config.highlight_builtin)
            printer = RichPrinter(sys.stdout, rules)
        else:
            printer = PlainPrinter(sys.stdout)
        try:
            return follow(args, reader, selection, printer)
        finally:
            printer.close()
            reader.close()

    return run_main(PROG, body, ctrl_c_status=ExitStatus.SUCCESS)


def follow(
    args: argparse.Namespace, reader: Reader, selection: Selection, printer: Any
) -> int:
    follower = reader.follower(selection, last=max(0, args.lines))
    reported = 0
    try:
        first = follower.poll()
        if args.since:
            printer.show(first)
        else:
            printer.show(first[-args.lines :] if args.lines > 0 else [])
        status_at = 0.0
        while not args.no_follow:
            for error in follower.errors[reported:]:
                print(f"{PROG}: warning: {error}", file=sys.stderr)
            reported = len(follower.errors)
            now = time.monotonic()
            if now - status_at >= STATUS_REFRESH_S:
                status_at = now
                if reader.fleet:
                    printer.footer(f"fleet store {reader.where}", True)
                else:
                    printer.footer(*agent_line(args.data_dir))
            time.sleep(FOLLOW_INTERVAL_S)
            printer.show(follower.poll())
    finally:
        follower.close()
    for error in follower.errors[reported:]:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    return ExitStatus.PARTIAL if follower.errors else ExitStatus.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
