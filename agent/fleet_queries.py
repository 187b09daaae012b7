"""The fleet reader's SQL: a Selection (agent/reading.py) as a query, pure.

Each function gives the statement and its parameters; agent/fleet_reader.py
runs them. A text search goes through the trigram index first (behind an
OFFSET 0 fence, so that the planner cannot walk the time index instead and
filter, which it chooses for a LIMIT when it guesses many hits: a rare word
then costs a walk of the whole table), unless the caller knows there are
many (`walk`); a regex has its LIKE prefilter (agent/regex_prefilter.py)
before it where it has one, the index asked about the part of it that
PostgreSQL's sample of the column says costs least (`Commands`); the
sessions table is joined only when a session's field is asked about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.reading import Selection
from agent.regex_prefilter import Sample, index_probe, like_prefilter

SESSION_COLUMNS = (
    "id, tag, bastion_user, remote_user, host, port, ssh_pid, tty, started_at,"
    " ended_at, status, end_reason, command_count, gaps, remote_command, origin,"
    " client_addr, inventory_host, remote_account, recorder, hash, extra,"
    " start_ticks, bastion"
)
COMMAND_COLUMNS = (
    "c.session, c.seq, c.time, c.command, c.cancelled, c.kind, c.program, c.hash,"
    " c.extra, c.bastion"
)
ACCESS_COLUMNS = "bastion, seq, time, actor, action, target, detail"
# PostgreSQL's sample of the commands (agent/fleet_records.py: sample_of),
# for the roles that may read the auditors' view: an agent's sees none, as
# row-level security hides the column's pg_stats row from it.
AUDITOR_SAMPLE_SQL = "SELECT * FROM auditor_command_sample()"
OLDEST_FIRST = " ORDER BY c.time, c.bastion, c.session, c.seq"
NEWEST_FIRST = " ORDER BY c.time DESC, c.bastion DESC, c.session DESC, c.seq DESC"

Query = tuple[str, list[Any]]
Conditions = tuple[list[str], list[Any]]


@dataclass(frozen=True)
class Commands:
    """Where a search reads the commands, and what PostgreSQL sampled of them.

    `relation`: the table, or an auditor's view of it (agent/fleet_schema.py:
    planned on the column's statistics); `sample`: what the regex's index
    probe is chosen by (agent/regex_prefilter.py).
    """

    relation: str = "commands"
    sample: Sample | None = None


TABLE = Commands()


def like(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def session_where(selection: Selection, a: str, bastion: bool = True) -> Conditions:
    """The conditions on a session's own fields (alias `a`).

    `bastion`: with the bastion's (a command has its own: no join for it).
    """

    def either(one: str, other: str) -> str:
        return f"({a}.{one} = %s OR {a}.{other} = %s)"

    asked = (
        # By id: a tag may be someone else's too (TAG~N is its own session).
        (selection.session or None, f"{a}.id = %s"),
        (selection.bastion or None if bastion else None, f"{a}.bastion = %s"),
        (selection.user or None, either("bastion_user", "remote_user")),
        (selection.host or None, f"{a}.host = %s"),
        (selection.bastion_user, f"{a}.bastion_user = %s"),
        (selection.remote_user, f"{a}.remote_user = %s"),
        (selection.host_named, either("host", "inventory_host")),
        (selection.recorder, f"{a}.recorder = %s"),
    )
    where: list[str] = []
    params: list[Any] = []
    for value, condition in asked:
        if value is not None:
            where.append(condition)
            params += [value] * condition.count("%s")
    if selection.origin == "direct":  # a session of no connection record
        where.append(f"coalesce({a}.origin, 'direct') = 'direct'")
    elif selection.origin is not None:
        where.append(f"{a}.origin = %s")
        params.append(selection.origin)
    return where, params


def _limit(sql: str, params: list[Any], limit: int | None, offset: int) -> Query:
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    return sql + " OFFSET %s", [*params, offset]


def _sessions_from(selection: Selection) -> Query:
    where, params = session_where(selection, "s")
    if selection.statuses:
        where.append("s.status = ANY(%s)")
        params.append(list(selection.statuses))
    if selection.until:
        where.append("s.started_at <= %s::timestamptz")
        params.append(selection.until)
    if selection.since:
        where.append("coalesce(s.ended_at, now()) >= %s::timestamptz")
        params.append(selection.since)
    if selection.having:
        where.append(
            "(s.bastion, s.id) IN (SELECT bastion, session FROM commands"
            " WHERE command ILIKE %s OFFSET 0)"
        )
        params.append(like(selection.having))
    return " FROM sessions s" + (" WHERE " + " AND ".join(where) if where else ""), (
        params
    )


def sessions_sql(
    selection: Selection, limit: int | None, offset: int, newest_first: bool
) -> Query:
    source, params = _sessions_from(selection)
    order = " DESC" if newest_first else ""
    sql = (
        f"SELECT {SESSION_COLUMNS}{source}"
        f" ORDER BY s.started_at{order}, s.bastion{order}, s.id{order}"
    )
    return _limit(sql, params, limit, offset)


def count_sessions_sql(selection: Selection) -> Query:
    source, params = _sessions_from(selection)
    return f"SELECT count(*){source}", params


def _commands_from(
    selection: Selection, walk: bool = False, commands: Commands = TABLE
) -> Query:
    """FROM and WHERE of the commands a selection names.

    `walk`: the commands newest first (the time index, backwards), then the
    text filters on each, for a search known to match many, where a page
    of them is found in a few thousand rows; never with a session's field
    (its join would be planned for all the matches at once).
    """
    text, params = [], []
    if selection.contains:
        text.append("c.command ILIKE %s")
        params.append(like(selection.contains))
    if selection.regex:
        prefilter = like_prefilter(selection.regex)
        if prefilter is None:
            text.append("c.command ~ %s")
        else:
            # The trigram index is asked about the probe alone, its recheck
            # runs it, then the whole LIKE and the regex, which the index
            # cannot take in this form, filter what is left. With the regex
            # indexable too, its trigrams were looked up as well and its
            # recheck ran on every row they admitted: over 1,000,000
            # commands, a regex matching none took 135 ms, 110 ms so; one
            # matching every 70th, 114, 73.
            probe = index_probe(prefilter, commands.sample)
            text.append("c.command LIKE %s")
            params.append(probe)
            if probe != prefilter:
                text.append("(c.command || '') LIKE %s")
                params.append(prefilter)
            text.append("(c.command || '') ~ %s")
        params.append(selection.regex)
    joined, session_params = session_where(selection, "s", bastion=False)
    walking = walk and not joined
    where = text if walking else []
    relation = commands.relation
    if walking:
        # By time alone: the page's rows are sorted on their ties after.
        source = f"(SELECT * FROM {relation} ORDER BY time DESC OFFSET 0) c"
    elif text:
        inner = " AND ".join(t.replace("c.command", "command") for t in text)
        source = f"(SELECT * FROM {relation} WHERE {inner} OFFSET 0) c"
    else:
        source = f"{relation} c"
    if joined:
        source += " JOIN sessions s ON s.bastion = c.bastion AND s.id = c.session"
        where += joined
        params += session_params
    for value, condition in (
        (selection.bastion or None, "c.bastion = %s"),
        (selection.since, "c.time >= %s::timestamptz"),
        (selection.until, "c.time <= %s::timestamptz"),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    return source + (" WHERE " + " AND ".join(where) if where else ""), params


def commands_sql(
    selection: Selection,
    limit: int | None,
    offset: int,
    newest_first: bool = False,
    walk: bool = False,
    commands: Commands = TABLE,
) -> Query:
    source, params = _commands_from(selection, walk and newest_first, commands)
    sql = f"SELECT {COMMAND_COLUMNS} FROM {source}"
    order = NEWEST_FIRST if newest_first else OLDEST_FIRST
    return _limit(sql + order, params, limit, offset)


def count_commands_sql(
    selection: Selection, at_most: int | None, commands: Commands = TABLE
) -> Query:
    source, params = _commands_from(selection, commands=commands)
    if at_most is None:
        return f"SELECT count(*) FROM {source}", params
    return (
        f"SELECT count(*) FROM (SELECT 1 FROM {source} LIMIT %s) counted",
        [*params, at_most],
    )


def counted_page_sql(
    selection: Selection,
    limit: int,
    offset: int,
    at_most: int,
    commands: Commands = TABLE,
) -> Query:
    """Up to `at_most` matches, how many, and the newest-first page of them.

    One scan of the matches for both; the page is right when they are
    fewer than `at_most` (all of them were looked at). A row even for an
    empty page, so the count always comes back.
    """
    source, params = _commands_from(selection, commands=commands)
    sql = (
        f"WITH m AS (SELECT c.* FROM {source} LIMIT %s)"
        " SELECT n.total, p.* FROM (SELECT count(*) AS total FROM m) n"
        f" LEFT JOIN LATERAL (SELECT {COMMAND_COLUMNS} FROM m c{NEWEST_FIRST}"
        " LIMIT %s OFFSET %s) p ON true"
    )
    return sql, [*params, at_most, limit, offset]


def access_sql(limit: int | None, offset: int) -> Query:
    sql = (
        f"SELECT {ACCESS_COLUMNS} FROM access_log"
        " ORDER BY time DESC, bastion DESC, seq DESC"
    )
    return _limit(sql, [], limit, offset)
