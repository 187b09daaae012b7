"""agent/regex_prefilter.py: a regex's LIKE, never refusing one of its matches.

The translation and its refusals are checked on literal patterns. That no
string a regex matches is refused by its LIKE is asked of a real PostgreSQL 15
(tests/pg_harness.py), for thousands of random patterns in and around the
subset and strings made to match them. A regex search through the fleet
reader finds exactly what a plain `~` finds, and still reports a bad regex,
even one whose LIKE rules out every row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import psycopg
import pytest

from agent.fleet_config import FleetConfig
from agent.fleet_queries import AUDITOR_SAMPLE_SQL
from agent.fleet_reader import FleetReader
from agent.fleet_records import sample_of
from agent.fleet_schema import migrate
from agent.reading import ReadError, Selection
from agent.regex_prefilter import Sample, index_probe, like_prefilter
from tests.pg_harness import PG_BIN, PgServer, postgres
from tests.test_fleet import password_file

needs_postgres = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists(), reason="postgresql-15 is not installed"
)
READER_PASSWORD = "prefilter-reader-pw"

TRANSLATED = [
    ("grep -r /srv/[0-9]+1$", "%grep -r /srv/_%1"),  # issue 18's
    ("abc", "%abc%"),
    ("^abc", "abc%"),
    ("abc$", "%abc"),
    ("^a.c$", "a_c"),
    ("a*b", "%b%"),
    ("a?b", "%b%"),
    ("a+b", "%a%b%"),
    ("^a+$", "a%"),
    ("a*?b", "%b%"),
    ("a+?b", "%a%b%"),
    ("a??b", "%b%"),
    ("^.*x.*$", "%x%"),
    ("x.*.*.+y", "%x%_%y%"),
    ("[xyz]q", "%_q%"),
    ("[^xyz]+q", "%_%q%"),
    ("[]x]q", "%_q%"),
    ("[^]x]q", "%_q%"),
    ("[-a]q", "%_q%"),
    ("[a-c-]q", "%_q%"),
    ("[]-a]q", "%_q%"),
    ("[é-ü]q", "%_q%"),
    ("50%_off", "%50\\%\\_off%"),
    ("C:\\\\temp", "%C:\\\\temp%"),  # the regex's \\ is one backslash
    ("\\.\\*\\$\\^\\[\\(\\{\\|\\%\\_", "%.*$^[({|\\%\\_%"),
    ("a\nb", "%a\nb%"),
    ("a\\\nb", "%a\nb%"),
    ("é.ü", "%é_ü%"),
    ("a]b", "%a]b%"),
]

REFUSED = [
    "",
    "a|b",
    "(ab)",
    "(?i)abc",
    "***=abc",
    "***:abc",
    "a{2}",
    "a}b",
    "\\d+x",
    "\\mword",
    "x\\y",
    "(a)\\1",
    "\\x41b",
    "abc\\",
    "\\éx",  # alphanumeric or not: the locale's say
    "*abc",
    "a**",
    "a+*",
    "a???",
    "^*a",
    "a^b",
    "a$b",
    "$a",
    "[[:digit:]]x",
    "[[.a.]]x",
    "[[=a=]]x",
    "[\\d]x",
    "[z-a]x",
    "[a-c-e]x",
    "[--a]x",
    "[abc",
    "x[]",
    "x[^]",
    # Nothing literal: the LIKE would admit about every command.
    ".*",
    "^$",
    "a*",
    "[ab]+",
    "^.?$",
    "...",
]


@pytest.mark.parametrize(("pattern", "like"), TRANSLATED)
def test_a_pattern_of_the_subset_is_translated(pattern: str, like: str) -> None:
    assert like_prefilter(pattern) == like


@pytest.mark.parametrize("pattern", REFUSED)
def test_anything_else_has_no_prefilter(pattern: str) -> None:
    assert like_prefilter(pattern) is None


# A fleet's commands as pg_stats samples them: `srv` on every row, `grep` on
# one in seven, `needle` on none of the sample.
SAMPLE = Sample(
    (("ls", 0.2),),
    tuple(
        f"{('grep -r', 'cat', 'tail -f', 'du -sh', 'vi', 'ls -l', 'sort')[n % 7]}"
        f" /srv/{n}/data{n * 13}"
        for n in range(100)
    ),
    0.8,
)
PROBED = [
    # Issue 18's: the index reads `grep`'s lists, not `srv`'s of every row.
    ("%grep -r /srv/_%1", "%grep%"),
    ("%grep -r /srv/_%/data%1", "%grep%"),
    # Two words each common, rarer together: the whole run.
    ("%cat /srv/1%", "%cat /srv/1%"),
    # Unseen: of equal costs, the longest.
    ("%needle-4242 _%", "%needle%"),
    ("%srv%needle%", "%needle%"),
    # A word of three is one trigram: without one, the whole LIKE.
    ("%ls -l%", "%ls -l%"),
    ("%ab_cd%", "%ab_cd%"),
    # Escapes kept: the run is `50%_off`.
    ("%50\\%\\_off%", "%50\\%\\_off%"),
    ("ls /srv/%", "%ls /srv/%"),
]


@pytest.mark.parametrize(("like", "probe"), PROBED)
def test_the_index_probe_is_the_cheapest_part(like: str, probe: str) -> None:
    assert index_probe(like, SAMPLE) == probe


def test_without_a_sample_the_index_is_asked_about_the_whole_like() -> None:
    assert index_probe("%grep -r /srv/_%1", None) == "%grep -r /srv/_%1"


# -- the property, asked of PostgreSQL ---------------------------------------

SEEDS = (18, 1800, 180000)
PATTERNS_PER_SEED = 3000
CHARS = "ab éü/-1\n\t%_]}\\.*[^$"  # what the strings are made of
LITERALS = "ab éü/-1\n\t%_]"
ESCAPABLE = "%_\\.*+?[]^$({|- \n/"
MEMBERS = "ab-]^%_é\n.$*"  # of a bracket expression, and rarely `\\` or `[`
OUTSIDE = ["|", "(", ")", "{2}", "\\d", "\\m", "[[:alpha:]]", "^", "$", "*", "\\"]
OUTSIDE += ["[z-a]", "(?i)", "\\é", "[\\d]", "[a-b-c]", "{", "}"]
QUANTIFIED = ["", "", "", "", "", "*", "+", "?", "*?", "+?", "??"] * 4 + ["**", "+?+"]

Atom = tuple[str, Callable[[random.Random], str]]


def _atom(rng: random.Random) -> Atom:
    """A piece of regex and a way to make a string it matches once."""
    kind = rng.random()
    if kind < 0.03:
        return rng.choice(OUTSIDE), lambda r: r.choice(CHARS)
    if kind < 0.1:  # a word: the index probe's (agent/regex_prefilter.py)
        word = "".join(rng.choice("abé1") for _ in range(rng.randint(3, 5)))
        return word, lambda r: word
    if kind < 0.45:
        c = rng.choice(LITERALS)
        return c, lambda r: c
    if kind < 0.6:
        c = rng.choice(ESCAPABLE)
        return "\\" + c, lambda r: c
    if kind < 0.75:
        return ".", lambda r: r.choice(CHARS)
    members = "".join(rng.choice(MEMBERS) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.1:
        members += rng.choice("\\[")
    if rng.random() < 0.4:
        outside = [c for c in CHARS if c not in members] or ["x"]
        return f"[^{members}]", lambda r: r.choice(outside)
    return f"[{members}]", lambda r: r.choice(members)


def _case(rng: random.Random) -> tuple[str, list[str]]:
    """A pattern, and strings: made to match it (mostly), and random ones."""
    atoms = [(*_atom(rng), rng.choice(QUANTIFIED)) for _ in range(rng.randint(1, 6))]
    start, end = rng.random() < 0.3, rng.random() < 0.3
    pattern = ("^" if start else "") + "".join(a + q for a, _, q in atoms)
    pattern += "$" if end else ""

    def noise(r: random.Random, most: int) -> str:
        return "".join(r.choice(CHARS) for _ in range(r.randint(0, most)))

    strings = []
    for _ in range(3):
        made = "" if start else noise(rng, 3)
        for _, sample, q in atoms:
            times = rng.randint(1, 3) if "+" in q else rng.randint(0, 2) if q else 1
            made += "".join(sample(rng) for _ in range(times))
        strings.append(made + ("" if end else noise(rng, 3)))
    strings += [noise(rng, 10) for _ in range(3)]
    return pattern, strings


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with postgres() as server:
        with server.connect(autocommit=False) as conn:
            migrate(conn)
        server.add_auditor_role("prefilter_reader", READER_PASSWORD)
        yield server


@pytest.mark.root
@needs_postgres
@pytest.mark.parametrize("seed", SEEDS)
def test_no_match_of_a_regex_is_refused_by_its_like(pg: PgServer, seed: int) -> None:
    rng = random.Random(seed)
    cases = [_case(rng) for _ in range(PATTERNS_PER_SEED)]
    likes = {p: like_prefilter(p) for p, _ in cases}
    translated = [p for p, like in likes.items() if like is not None]
    assert len(translated) > PATTERNS_PER_SEED // 4  # the subset is well covered
    assert len(translated) < len(likes)  # and its edges too
    with pg.connect() as conn:
        try:  # what the subset takes, PostgreSQL takes
            conn.execute(
                "SELECT count(*) FROM unnest(%s::text[]) p WHERE '' ~ p", [translated]
            )
        except psycopg.errors.InvalidRegularExpression:
            for p in translated:
                try:
                    conn.execute("SELECT '' ~ %s", [p])
                except psycopg.errors.InvalidRegularExpression as e:
                    pytest.fail(f"{p!r} -> {likes[p]!r}, but PostgreSQL: {e}")
        # The index's probe, from a sample of these strings: implied too.
        sample = Sample((), tuple(s for _, strings in cases[::7] for s in strings), 1)
        probes = {p: index_probe(like, sample) for p, like in likes.items() if like}
        rows = [
            (p, likes[p], probes[p], s)
            for p, strings in cases
            if likes[p]
            for s in strings
        ]
        matched, refused, probed = conn.execute(
            "SELECT count(*) FILTER (WHERE s ~ p),"
            " array_agg(ARRAY[p, l, s]) FILTER (WHERE s ~ p AND s NOT LIKE l),"
            " array_agg(ARRAY[p, i, s]) FILTER (WHERE s ~ p AND s NOT LIKE i)"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " t(p, l, i, s)",
            [list(column) for column in zip(*rows, strict=True)],
        ).fetchone()
    assert refused is None, f"matched by the regex, refused by its LIKE: {refused[:5]}"
    assert probed is None, f"matched by the regex, refused by its probe: {probed[:5]}"
    assert matched > len(rows) // 5  # many strings did match
    assert sum(probes[p] != likes[p] for p in probes) > len(probes) // 20


# -- through the fleet reader ---------------------------------------------------

T0 = datetime(2027, 1, 1, tzinfo=UTC)
CORPUS = [f"grep -r /srv/{n}" for n in range(300)] + [
    "grep -r /srv/",
    "echo 50% off",
    "echo 50 percent off",
    "a_b axb",
    "type C:\\temp\\x",
    "line one\nline two",
    "é ü",
    "printf '%s\\n' x",
]
SEARCHES = [
    "grep -r /srv/[0-9]+1$",
    "^grep -r /srv/1",
    "/srv/.*7$",
    "srv/2+?5",
    "50%",
    "a_b",
    "C:\\\\temp",
    "é.ü",
    "one\nline",
    "^line.*two$",
    "^grep -r /srv/$",
    "^nothing here$",
    "[[:digit:]]{2}1$",  # no prefilter: the plain `~`
]
# Outside what PostgreSQL compiles, yet of the subset: its LIKE (%Q%)
# rules out every command, and the regex must still be refused.
TOO_COMPLEX = "a?" * 3000 + "Q"
INVALID = ["(unclosed", "a**", "[z-a]x", TOO_COMPLEX]


@pytest.fixture(scope="module")
def stored(pg: PgServer) -> PgServer:
    pg.sql("INSERT INTO bastions (id, name) VALUES ('p1', 'prefilter')")
    pg.sql(
        "INSERT INTO sessions (bastion, id, tag, bastion_user, ssh_pid, tty,"
        " started_at, status, state_shard, state_mtime_ns) VALUES ('p1', 's1',"
        " 's1', 'root', 1, '/dev/pts/1', %s, 'closed', 1, 1)",
        [T0],
    )
    times = [T0 + timedelta(seconds=n) for n in range(len(CORPUS))]
    pg.sql(
        "INSERT INTO commands (bastion, session, seq, time, command)"
        " SELECT 'p1', 's1', n, t, c FROM unnest(%s::int[], %s::timestamptz[],"
        " %s::text[]) u(n, t, c)",
        [list(range(1, len(CORPUS) + 1)), times, CORPUS],
    )
    pg.sql("ANALYZE commands")
    return pg


def _reader(pg: PgServer, tmp_path: Path) -> FleetReader:
    """A FleetReader as audit-web has it: an auditor's, read-only, a timeout."""
    database = pg.dsn("prefilter_reader")
    fleet = FleetConfig(
        database=database, password_file=password_file(tmp_path, READER_PASSWORD)
    )
    return FleetReader(database, fleet, statement_timeout_s=2.0, read_only=True)


@pytest.fixture
def reader(stored: PgServer, tmp_path: Path) -> Iterator[FleetReader]:
    r = _reader(stored, tmp_path)
    yield r
    r.close()


@pytest.mark.root
@needs_postgres
def test_a_regex_search_finds_what_a_plain_match_finds(
    stored: PgServer, reader: FleetReader
) -> None:
    assert sum(like_prefilter(p) is not None for p in SEARCHES) == len(SEARCHES) - 1
    for pattern in SEARCHES:
        plain = [
            seq
            for (seq,) in stored.sql(
                "SELECT seq FROM commands WHERE bastion = 'p1' AND command ~ %s"
                " ORDER BY time",
                [pattern],
            )
        ]
        newest = plain[::-1][:20]
        selection = Selection(bastion="p1", regex=pattern)
        assert [c.seq for c, _ in reader.commands(selection)] == plain, pattern
        assert reader.count_commands(selection) == len(plain), pattern
        total, page = reader.counted_page(selection, 20, 0, 1001)
        assert (total, [c.seq for c, _ in page]) == (len(plain), newest), pattern
        walked = reader.commands(selection, 20, 0, newest_first=True, many=True)
        assert [c.seq for c, _ in walked] == newest, pattern
    # The index was asked about a probe, not the whole LIKE (which needs srv),
    # chosen by the sample an auditor may read.
    sample = sample_of(reader.conn.execute(AUDITOR_SAMPLE_SQL).fetchone())
    assert index_probe("%grep -r /srv/_%1", sample) == "%grep%"
    one = Selection(bastion="p1", regex="grep -r /srv/[0-9]+1$")
    assert len(list(reader.commands(one))) == 29  # 11, 21, ... 291: a digit, then 1


@pytest.mark.root
@needs_postgres
def test_a_bad_regex_is_reported_even_when_its_like_rules_out_every_row(
    stored: PgServer, reader: FleetReader
) -> None:
    assert like_prefilter(TOO_COMPLEX) == "%Q%"
    assert stored.sql("SELECT count(*) FROM commands WHERE command LIKE '%Q%'") == [
        (0,)
    ]
    for bad in INVALID:
        selection = Selection(bastion="p1", regex=bad)
        for ask in (
            partial(reader.counted_page, selection, 20, 0, 1001),
            partial(reader.count_commands, selection),
            partial(reader.commands, selection),  # the export's: before any row
            partial(reader.commands, selection, 20, 0, newest_first=True, many=True),
        ):
            with pytest.raises(ReadError, match="not a regular expression"):
                ask()
    assert reader.count_commands(Selection(regex="^grep -r /srv/1")) == 111


@pytest.mark.root
@needs_postgres
def test_a_bad_regex_is_reported_under_a_generic_plan(
    stored: PgServer, tmp_path: Path
) -> None:
    """psycopg prepares a statement run five times; PostgreSQL's generic plan of
    it compiles the regex only at a row, and the LIKE lets none by."""
    reader = _reader(stored, tmp_path)
    try:
        reader.conn.execute("SET plan_cache_mode = force_generic_plan")
        for n in range(10):  # the same statement: a LIKE, then the regex
            assert reader.count_commands(Selection(regex=f"^grep -r /srv/{n}Q")) == 0
        with pytest.raises(ReadError, match="too complex"):
            reader.count_commands(Selection(regex=TOO_COMPLEX))
    finally:
        reader.close()


@pytest.mark.root
@needs_postgres
def test_a_search_is_planned_for_its_pattern_each_time(
    stored: PgServer, tmp_path: Path
) -> None:
    """Never a prepared statement (whose generic plan cannot see how common a
    pattern is); a page of sessions, which does not depend on one, is."""
    reader = _reader(stored, tmp_path)
    try:
        prepared = "SELECT statement FROM pg_prepared_statements"
        searches = (Selection(regex="grep -r /srv/[0-9]+1$"), Selection(contains="srv"))
        for _ in range(12):  # psycopg prepares a statement at its fifth run
            for selection in searches:
                reader.counted_page(selection, 20, 0, 1001)
                reader.count_commands(selection)
            reader.sessions(Selection(), 20)
        statements = [s for (s,) in reader.conn.execute(prepared)]
        assert statements and all("FROM sessions" in s for s in statements)
    finally:
        reader.close()
