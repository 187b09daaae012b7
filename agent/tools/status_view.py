"""`audit-agent status`: is the agent healthy, and what is it doing.

Exit status 0 when healthy, 4 when not (the reasons on stdout, one a line),
2 when the data directory cannot be read: a monitoring check needs no more.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO

from agent.config import MODE_MEANING, scope_text
from agent.escape import json_dumps
from agent.exits import ExitStatus
from agent.reader import check_data_dir
from agent.records import iso
from agent.status_file import AgentStatus, agent_running, assess, read_status
from agent.tools.options import printable
from tracer import Mode


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    if days:
        return f"{days}d {h}h"
    if hours:
        return f"{hours}h {m}m"
    return f"{m}m {s}s"


def summary_lines(status: AgentStatus | None, now: float, running: bool) -> list[str]:
    """Who the agent is and what it reaches, the store, the ingest, the events."""
    if status is None:
        return []
    version = f"bastion-audit {status.version}" if status.version else "an agent"
    mode = status.mode or "?"
    lines = [
        f"agent: {version} on {printable(status.bastion or '?')}, pid {status.pid}, "
        + (
            f"up {human_age(now - status.started_at)}, "
            if running
            else f"{status.state}, "
        )
        + f"status {human_age(now - status.updated_at)} old",
        f"data dir: {printable(status.data_dir)}",
        f"mode: {mode}"
        + (f" ({MODE_MEANING[Mode(mode)]})" if mode in tuple(Mode) else ""),
        f"scope: {scope_text(status.scope_pid)}",
        f"store: {status.shards} shard{'' if status.shards == 1 else 's'}, "
        f"{human_bytes(status.store_bytes)}; "
        f"recordings {human_bytes(status.recordings_bytes)}; last write "
        + (
            f"{human_age(now - status.last_flush_at)} ago"
            if status.last_flush_at
            else "none yet"
        )
        + (f"; {status.flush_errors} write errors" if status.flush_errors else ""),
        f"ingest: {human_bytes(status.ingest_lag_bytes)} behind over "
        f"{status.logs} logs; {status.pending_commands} commands not yet written",
    ]
    if status.disk:
        d = status.disk
        lines.append(
            f"disk: {human_bytes(d.get('free_bytes', 0))} free, reserve "
            f"{human_bytes(d.get('reserve_bytes', 0))} ({d.get('state')})"
        )
    if status.chain:
        c = status.chain
        lines.append(
            f"chain: key {c.get('chain_id')}, {c.get('links', 0)} links, signed "
            f"through link {c.get('signed_through', 0)}"
            + (f" at {c['signed_at']}" if c.get("signed_at") else "")
            + ("; NOT SIGNING" if c.get("problem") else "")
        )
    if status.events:
        e = status.events
        lines.append(
            f"events: to {e.get('to')}: {e.get('written', 0)} written, "
            f"{e.get('sent', 0)} sent, {e.get('backlog', 0)} waiting, "
            f"{e.get('dropped', 0)} dropped"
        )
    if status.alerts:
        a = status.alerts
        lines.append(
            f"alerts: to {a.get('to')}: {a.get('sent', 0)} sent, "
            f"{a.get('pending', 0)} waiting, {a.get('retries', 0)} retries, "
            f"{a.get('failed', 0)} given up, {a.get('dropped', 0)} dropped"
            + (
                f"; last error: {printable(str(a.get('last_error')))}"
                if a.get("last_error")
                else ""
            )
        )
    if status.fleet:
        f = status.fleet
        lines.append(
            f"fleet: to {f.get('database')} as {f.get('bastion')}: {f.get('state')}, "
            f"{f.get('lag_records', 0)} records ({f.get('lag_s', 0.0):.1f}s) behind, "
            f"{f.get('shipped_commands', 0)} commands shipped"
            + (f"; last error: {f.get('last_error')}" if f.get("last_error") else "")
        )
    return lines


def session_rows(status: AgentStatus, now: float) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for s in status.sessions:
        where = f"{s.remote_user}@{s.host}" + (f":{s.port}" if s.port != 22 else "")
        if s.tracer_pid:
            traced = f"yes (pid {s.tracer_pid})"
        elif s.ssh_alive:
            traced = "NO"
        else:
            traced = "ssh gone"
        rows.append(
            (
                printable(s.id),
                printable(f"{s.bastion_user} → {where}"),
                iso(s.started_at),
                human_age(now - s.started_at),
                str(s.command_count)
                + (f" (+{s.unparsed_keys} keys unparsed)" if s.unparsed_keys else ""),
                traced,
                human_bytes(s.lag_bytes),
            )
        )
    return rows


HEADERS = ("session", "who", "started", "for", "commands", "traced", "lag")


def render_plain(
    status: AgentStatus | None,
    problems: list[str],
    now: float,
    running: bool,
    out: IO[str],
) -> None:
    out.write(("healthy" if not problems else "UNHEALTHY") + "\n")
    for problem in problems:
        out.write(f"  problem: {problem}\n")
    for line in summary_lines(status, now, running):
        out.write(line + "\n")
    if status is None or not running:
        return
    out.write(f"live sessions: {len(status.sessions)}\n")
    for row in session_rows(status, now):
        out.write("  " + "\t".join(row) + "\n")
    out.write(f"straces: {len(status.straces)}\n")
    for st in status.straces:
        how = "adopted" if st.adopted else "started"
        out.write(f"  pid {st.pid}\t{printable(st.tag)}\tssh {st.ssh_pid}\t{how}\n")


def render_rich(
    status: AgentStatus | None,
    problems: list[str],
    now: float,
    running: bool,
    out: IO[str],
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False)
    if problems:
        console.print(Text("✗ UNHEALTHY", style="bold red"))
        for problem in problems:
            console.print(Text(f"  {problem}", style="red"))
    else:
        console.print(Text("✓ healthy", style="bold green"))
    for line in summary_lines(status, now, running):
        console.print(Text(line))
    if status is None or not running:
        return
    table = Table(title=f"live sessions: {len(status.sessions)}", title_justify="left")
    for header in HEADERS:
        table.add_column(header, no_wrap=header != "who")
    for row in session_rows(status, now):
        style = "bold red" if row[5] == "NO" else ""
        table.add_row(*(Text(cell) for cell in row), style=style)
    console.print(table)
    if not status.straces:
        console.print(Text("straces: none"))
        return
    straces = Table(title=f"straces: {len(status.straces)}", title_justify="left")
    for header in ("pid", "session tag", "ssh pid", "how"):
        straces.add_column(header)
    for st in status.straces:
        how = "adopted" if st.adopted else "started"
        straces.add_row(str(st.pid), Text(st.tag), str(st.ssh_pid), how)
    console.print(straces)


NO_SPACE_BYTES = 64 << 10  # less than this free: not even status.json fits


def disk_problem(data_dir: Path) -> str | None:
    """The data disk as it is now: full, when the agent cannot even say so."""
    try:
        st = os.statvfs(data_dir)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= NO_SPACE_BYTES:
        return None
    return (
        f"the data disk holding {data_dir} has no space left ({free} bytes free): "
        "the agent can write neither its store nor its status"
    )


def show_status(data_dir: Path, as_json: bool, max_lag_bytes: int) -> int:
    check_data_dir(data_dir)
    status = read_status(data_dir)
    now = time.time()
    problems = assess(status, now, max_lag_bytes, data_dir)
    running = status is not None and agent_running(status, data_dir)
    full = disk_problem(data_dir)
    if full is not None and running:
        problems.append(full)
    if as_json:
        doc = {
            "healthy": not problems,
            "problems": problems,
            "status": status.to_document() if status is not None else None,
        }
        sys.stdout.write(json_dumps(doc, indent=1) + "\n")
    elif sys.stdout.isatty():
        render_rich(status, problems, now, running, sys.stdout)
    else:
        render_plain(status, problems, now, running, sys.stdout)
    sys.stdout.flush()
    return ExitStatus.UNHEALTHY if problems else ExitStatus.SUCCESS
