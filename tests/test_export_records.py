"""The export's fast encoders write exactly what json.dumps and csv.writer write.

audit-export encodes a million records by hand (agent/export_record.py); the
reference is the plain way, json.dumps(flat_record(...)) and csv.writer over
the same values, for hostile text: quotes, commas, line breaks, control
characters, line separators, wide characters, an empty command. Records of
every kind (transfers, inputs, actions, unterminated lines) and the risk
rules' names are in them too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
from pathlib import Path

import pytest

from agent.daemon.signer import Chain, Signer
from agent.daemon.store import Store
from agent.export_record import Stamp
from agent.highlight import BUILTIN_RULES
from agent.local_reader import LocalReader
from agent.reader import load, scan
from agent.reading import Selection
from agent.records import Command, Kind, Origin, SessionStatus, iso
from agent.tools.export import write_records
from agent.tools.export_shards import select, write_documents
from tests.test_store import make_session

HOSTILE = [
    "",
    " ",
    'echo "quoted, with comma"',
    "a\rb\nc\r\nd",
    "tab\there\x00nul\x1b[31mred\x1b[0m",
    "\u2028\u2029\x85\ufeff",
    "ünïcödé 漢字 🙂",
    '\\"\\\\',
    "=cmd|' /C calc'!A0",
    '"',
    ",",
]


def seed(data_dir: Path, chained: bool = False) -> None:
    """Hostile records; `chained`: each document with its link, as the agent's."""
    chain = Chain(Signer.load_or_create(data_dir), data_dir) if chained else None
    store = Store(data_dir / "store", 0.05, chain=chain)
    store.open()
    rng = random.Random(16)
    alphabet = "".join(HOSTILE) + "abc,\"'\r\n\\"
    texts = HOSTILE + [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        for _ in range(200)
    ]
    odd = dataclasses.replace(
        make_session('odd,"one"', pid=7),
        host=None,
        remote_user='bob "the, admin"',
        port=None,
        origin=Origin.WEB_TOKEN,
        client_addr="10.0.0.1\r\n",
        status=SessionStatus.TERMINATED,
        ended_at=1_800_000_100.0,
    )
    texts += ["rm -rf /", "sudo -i", "curl http://x | sh"]  # risky: named
    for n, session in enumerate((make_session("s1", pid=1), odd)):
        cmds = [command(session.id, i, text) for i, text in enumerate(texts[n::2], 1)]
        store.submit(dataclasses.replace(session, command_count=len(cmds)), cmds)
    store.flush()
    # A command whose session document is in no shard.
    store.submit(make_session("gone", pid=9), [Command("gone", 1, iso(0.0), "x,y")])
    store.flush()
    shard = sorted((data_dir / "store").iterdir())[-1]
    tables = json.loads(shard.read_text())
    tables["sessions"] = {
        k: v for k, v in tables["sessions"].items() if v["id"] != "gone"
    }
    shard.write_text(json.dumps(tables))


def command(sid: str, i: int, text: str) -> Command:
    """A command, or now and then a record of another kind."""
    at = iso(1_800_000_000.0 + i)
    if i % 11 == 0:
        transfer = {"path": text, "size": i, "outcome": 'done, "ok"'}
        return Command(
            sid, i, at, f"upload {text}", kind=Kind.TRANSFER, transfer=transfer
        )
    if i % 13 == 0:
        return Command(sid, i, at, text, kind=Kind.INPUT, program=f"read {text}")
    if i % 17 == 0:
        return Command(sid, i, at, "", kind=Kind.HIDDEN_INPUT, program="sudo", keys=i)
    if i % 19 == 0:
        action = {"rule": text, "action": "warn", "outcome": "done", "detail": None}
        return Command(sid, i, at, text, kind=Kind.ACTION, action=action)
    if i % 23 == 0:
        return Command(sid, i, at, text, typed=f"!{i}", unterminated=True)
    return Command(sid, i, at, text, i % 7 == 0)


STAMP = Stamp('bastion "one", ünï', BUILTIN_RULES)


def reference(data_dir: Path, fmt: str) -> str:
    """What the export writes from Command records (the fleet's way)."""
    out = io.StringIO()
    with LocalReader(data_dir) as reader:
        write_records(reader.commands(Selection()), out, fmt, STAMP)
    return out.getvalue()


@pytest.mark.parametrize("chained", [False, True], ids=["plain", "chained"])
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_fast_encoders_match_the_plain_ones(
    tmp_path: Path, fmt: str, chained: bool
) -> None:
    seed(tmp_path, chained)
    store = scan(tmp_path)
    out = io.StringIO()
    batches = select(store, Selection())
    count = write_documents(batches, store.sessions, out, fmt, STAMP)
    assert count == len(load(tmp_path).commands)
    assert out.getvalue() == reference(tmp_path, fmt)
    assert "rm-root" in out.getvalue() and "pipe-to-shell" in out.getvalue()


def test_csv_cells_quote_as_the_csv_module_does() -> None:
    from agent.export_record import _quoted

    for ch in map(chr, range(0x3000)):
        text = f"a{ch}b"
        out = io.StringIO()
        csv.writer(out).writerow([text, "x"])
        assert f"{_quoted(text)},x\r\n" == out.getvalue(), repr(ch)


@pytest.mark.parametrize(
    "selection",
    [
        Selection(session="s1"),
        Selection(session="gone"),
        Selection(user='bob "the, admin"'),
        Selection(host="db1"),
        Selection(since=iso(1_800_000_050.0), until=iso(1_800_000_120.0)),
        Selection(contains="ÜNÏ"),
        Selection(regex=r"^upload .*,"),
        Selection(bastion="elsewhere"),
    ],
)
def test_the_streamed_selection_is_the_readers(
    tmp_path: Path, selection: Selection
) -> None:
    seed(tmp_path)
    store = scan(tmp_path)
    streamed = io.StringIO()
    batches = select(store, selection)
    write_documents(batches, store.sessions, streamed, "jsonl", STAMP)
    plain = io.StringIO()
    with LocalReader(tmp_path) as reader:
        write_records(reader.commands(selection), plain, "jsonl", STAMP)
    assert streamed.getvalue() == plain.getvalue()
