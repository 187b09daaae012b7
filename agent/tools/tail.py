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

from agent.config import ConfigError, config_source, rules_of
from agent.exits import ExitStatus, run_main
from agent.export_record import JsonRecords, Stamp
from agent.highlight import HighlightRule
from agent.reading import Reader, Selection
from agent.records import Command, Kind, Session, iso
from agent.rules import Highlighter
from agent.status_file import StatusError, not_running, read_status
from agent.tools.layout import (
    CLOCK_WIDTH,
    FULL_TIME_WIDTH,
    Column,
    day_of,
    fit,
    full_times,
    runs_by_day,
    share,
    time_cell,
)
from agent.tools.options import (
    NoMatch,
    add_reading_options,
    check_matches,
    open_reading,
    printable,
    selection_from_args,
)
from agent.version import add_version_option

PROG = "audit-tail"
FOLLOW_INTERVAL_S = 0.25
STATUS_REFRESH_S = 1.0

Rows = list[tuple[Command, Session | None]]
INPUT_INDENT = "    ⤷ "  # a line read by the program the row above started


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
        shown_text(command),
    )


def shown_text(command: Command) -> str:
    """The command as a row shows it: a program's input indented under it."""
    if command.kind == Kind.HIDDEN_INPUT:
        return f"[{command.keys or 0} keys typed unseen at the shell prompt]"
    text = printable(command.command)
    if command.kind == Kind.INPUT:
        return INPUT_INDENT + text
    if command.typed is not None:
        text += f"  (typed: {printable(command.typed)})"
    return text


def unparsed_notice(session: Session) -> str:
    assert session.unparsed_input is not None
    keys, first, last = session.unparsed_input
    return (
        f"[{keys} keys typed that became no command, input or secret, "
        f"{iso(first)} to {iso(last)}]"
    )


class PlainPrinter:
    """Tab-separated lines, for pipes and files; the command is the last field."""

    def __init__(self, out: IO[str], stamp: Stamp) -> None:
        self.out = out
        self.stamp = stamp

    def show(self, rows: Rows) -> None:
        for command, session in rows:
            time_, who, where, sid, text = fields(command, session)
            bastion = printable(self.stamp.bastion_of(session))
            risk = " ".join(self.stamp.risk(command.command)) or "-"
            self.out.write(
                f"{time_}\t{bastion}\t{who} → {where}\t{sid}\t{risk}\t{text}\n"
            )
        self.out.flush()

    def notice(self, session: Session) -> None:
        """A row of its own: time, bastion, no who, the session, no risk, the notice."""
        bastion = printable(self.stamp.bastion_of(session))
        sid = printable(session.id)
        self.out.write(
            f"{iso(time.time())}\t{bastion}\t-\t{sid}\t-\t{unparsed_notice(session)}\n"
        )
        self.out.flush()

    def footer(self, text: str, healthy: bool) -> None:
        pass

    def close(self) -> None:
        pass


class JsonPrinter(PlainPrinter):
    """JSON Lines, exactly the records `audit-export --format jsonl` writes."""

    def __init__(self, out: IO[str], stamp: Stamp) -> None:
        super().__init__(out, stamp)
        self.text = JsonRecords(stamp).text

    def show(self, rows: Rows) -> None:
        for command, session in rows:
            self.out.write(self.text(command, session) + "\n")
        self.out.flush()

    def notice(self, session: Session) -> None:
        pass  # the records only; audit-sessions has the session's count


class RichPrinter:
    """Aligned, colored rows and a live status line (rich is imported only here).

    Laid out for the terminal's width at each batch (agent/tools/layout.py):
    "who" wraps first, then the session id (whole, never cut), and the
    command last; narrower than FULL_TIME_MIN_WIDTH the time is HH:MM:SS
    under a line that names the day.
    """

    PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")
    WHO_MIN = 12
    SESSION_MAX_UNWRAPPED = 24  # an id longer than this may wrap (whole)
    COMMAND_MIN = 20
    COMMAND_SHARE = 0.4  # of the width, before "who" starts to wrap

    def __init__(self, out: IO[str], stamp: Stamp, rules: Sequence[Highlighter]):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, highlight=False)
        self.risk = stamp.risk
        self.styles = {r.name: r.style for r in reversed(rules)}
        self.header_done = False
        self.shown = 0
        self.flagged = 0
        self.day = ""
        # The widest cells so far: columns only grow, so batches stay aligned.
        self.natural = [len("who"), len("session"), len("command")]
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
        from rich.text import Text

        if not rows:
            return
        width = self.console.width
        lines = []
        for command, session in rows:
            time_, who, where, sid, text = fields(command, session)
            people = Text(who, style=self._color(who))
            people.append(" → ")
            people.append(where, style=self._color(where))
            # Text, never markup: a command like "[red]" is shown as typed.
            names = self.risk(command.command)
            line = Text(text, style=self.styles[names[0]] if names else "bold")
            if names:
                self.flagged += 1
                line.append("  ⚠ " + ", ".join(names), style="red")
            if session is not None and session.bastion:  # read from the fleet
                sid = f"{printable(session.bastion)}/{sid}"
            lines.append((time_, people, Text(sid), line))
            for i, cell in enumerate(lines[-1][1:]):
                self.natural[i] = max(self.natural[i], cell.cell_len)
        time_width = FULL_TIME_WIDTH if full_times(width) else CLOCK_WIDTH
        widths = fit(
            [
                Column(time_width, time_width, 0),
                Column(self.natural[0], self.WHO_MIN, 1),
                Column(
                    self.natural[1],
                    min(self.natural[1], self.SESSION_MAX_UNWRAPPED),
                    2,
                ),
                Column(
                    share(self.natural[2], width, self.COMMAND_MIN, self.COMMAND_SHARE),
                    self.COMMAND_MIN,
                    3,
                ),
            ],
            width,
        )
        for start, end in runs_by_day([line[0] for line in lines]):
            self._print(lines[start:end], widths, width)
        self.shown += len(rows)

    def _print(self, lines: list[Any], widths: list[int], width: int) -> None:
        from rich.table import Table
        from rich.text import Text

        day = day_of(lines[0][0])
        if not full_times(width) and day != self.day:
            self.live.console.print(Text(f"── {day} (UTC)", style="dim"))
        self.day = day
        table = Table(
            box=None,
            show_header=not self.header_done,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            collapse_padding=True,
        )
        for name, w in zip(("time", "who", "session", "command"), widths, strict=True):
            table.add_column(
                name,
                width=w,
                no_wrap=name == "time",
                overflow="fold",
                style="dim" if name == "time" else None,
            )
        for time_, people, sid, line in lines:
            table.add_row(time_cell(time_, width), people, sid, line)
        self.live.console.print(table)
        self.header_done = True

    def notice(self, session: Session) -> None:
        from rich.text import Text

        line = Text(f"⚠ session {printable(session.id)}: ", style="red")
        line.append(unparsed_notice(session), style="yellow")
        self.live.console.print(line)

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
    gone = not_running(status, data_dir)
    if gone is not None:
        return f"{gone}: waiting", False
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
    add_version_option(parser)
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
    parser.add_argument(
        "--wait",
        action="store_true",
        help="a --session, --user or --host that names no session yet is waited "
        "for (without it: exit 1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        config, reader = open_reading(args)
        check_styles(config.highlight, config_source(args.config))
        selection = selection_from_args(args)
        rules = rules_of(config)
        stamp = Stamp.of(config, rules)
        printer: Any
        with reader:
            # Before any waiting: a filter that names no session is a typo,
            # unless --wait says the session is yet to come.
            try:
                check_matches(PROG, selection, reader)
            except NoMatch as e:
                if not args.wait or args.no_follow:
                    raise
                print(f"{PROG}: {e} yet: waiting for it", file=sys.stderr)
            if args.json:
                printer = JsonPrinter(sys.stdout, stamp)
            elif sys.stdout.isatty():
                # The rules file's highlight rules, agent.toml's, the built-in ones.
                printer = RichPrinter(sys.stdout, stamp, rules.highlighters())
            else:
                printer = PlainPrinter(sys.stdout, stamp)
            try:
                return follow(args, reader, selection, printer)
            finally:
                printer.close()

    return run_main(PROG, body, ctrl_c_status=ExitStatus.SUCCESS)


def follow(
    args: argparse.Namespace, reader: Reader, selection: Selection, printer: Any
) -> int:
    follower = reader.follower(selection, last=max(0, args.lines))
    reported = 0
    noticed: dict[str, int] = {}

    def show(rows: Rows) -> None:
        """The rows, and a line for each session whose unparsed keys grew."""
        printer.show(rows)
        for _, session in rows:
            if session is None or session.unparsed_input is None:
                continue
            keys = session.unparsed_input[0]
            if keys > noticed.get(session.id, 0):
                noticed[session.id] = keys
                printer.notice(session)

    try:
        first = follower.poll()
        if args.since:
            show(first)
        else:
            show(first[-args.lines :] if args.lines > 0 else [])
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
            show(follower.poll())
    finally:
        follower.close()
    for error in follower.errors[reported:]:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    return ExitStatus.PARTIAL if follower.errors else ExitStatus.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
