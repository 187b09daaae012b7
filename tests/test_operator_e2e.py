"""The operator's view of real sessions: status, recordings, events, a live tail.

Real components only: sshd on 127.0.0.1, bash, ssh in a pty, the agent as a
daemon (killed and restarted), rsyslogd started by the test, the CLIs as
subprocesses.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pexpect
import pytest

from tests import harness, rsyslog
from tests.test_recording import check_asciicast_v2, output_of

pytestmark = [pytest.mark.root, pytest.mark.slow]

EVENT_SCHEMA = json.loads((harness.REPO / "schema" / "event.schema.json").read_text())
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def syslog_server(module_dir: Path) -> Iterator[rsyslog.Rsyslog]:
    if not rsyslog.available():
        pytest.skip("rsyslog is not installed (make test installs it)")
    with rsyslog.rsyslogd(module_dir / "rsyslog") as server:
        yield server


def stored(data_dir: Path, tag: str) -> list[str]:
    return [r["command"] for r in harness.export(data_dir, "--session", tag)]


def status(data_dir: Path) -> tuple[int, dict]:
    result = harness.run_cli(
        "audit-agent", "status", "--data-dir", str(data_dir), "--json"
    )
    return result.returncode, json.loads(result.stdout)


def run(child: pexpect.spawn, command: str, expect: str) -> None:
    child.send(command.encode() + b"\r")
    child.expect(expect.encode())
    child.expect(harness.PROMPT)


def open_session(user: harness.TestUser, server: harness.Sshd, tag: str):
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    )
    pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(pid), timeout=DEADLINE_S)
    return child, pid


def close_session(child: pexpect.spawn) -> None:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()


def test_a_session_is_reported_recorded_and_sent(
    data_dir: Path,
    user: harness.TestUser,
    server: harness.Sshd,
    syslog_server: rsyslog.Rsyslog,
) -> None:
    events_file = data_dir.parent / "events.jsonl"
    tag = f"op-{secrets.token_hex(3)}"
    secret = f"S3cr3t-{secrets.token_hex(4)}"
    with harness.agent(
        data_dir,
        "--events-file",
        str(events_file),
        "--syslog",
        f"tcp://127.0.0.1:{syslog_server.tcp_port}",
    ):
        child, ssh_pid = open_session(user, server, tag)
        run(child, "echo visible-$((40+2))", "visible-42")
        child.send(b'read -s -p "Pw: " pw; echo got-${#pw}\r')
        child.expect(b"Pw: ")
        child.send(secret.encode() + b"\r")  # not echoed: never on the screen
        child.expect(f"got-{len(secret)}".encode())
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: len(stored(data_dir, tag)) == 2, timeout=DEADLINE_S)

        def traced_in_status() -> dict | None:
            code, doc = status(data_dir)
            sessions = (
                {s["id"]: s for s in doc["status"]["sessions"]} if doc["status"] else {}
            )
            return (
                doc if code == 0 and sessions.get(tag, {}).get("tracer_pid") else None
            )

        doc = harness.wait_for(traced_in_status, timeout=DEADLINE_S)
        (live,) = [s for s in doc["status"]["sessions"] if s["id"] == tag]
        assert (live["ssh_pid"], live["command_count"]) == (ssh_pid, 2)
        assert ssh_pid in [s["ssh_pid"] for s in doc["status"]["straces"]]
        assert doc["status"]["events"]["to"].endswith(f":{syslog_server.tcp_port}")
        close_session(child)
        harness.wait_for(
            lambda: harness.sessions_in(data_dir)[tag].status == "closed",
            timeout=DEADLINE_S,
        )
        harness.wait_for(
            lambda: events_file.exists() and '"session_end"' in events_file.read_text(),
            timeout=DEADLINE_S,
        )
    # Stopped cleanly: status says so, with its own exit status.
    code, doc = status(data_dir)
    assert code == 4 and doc["problems"][0].startswith("the agent is not running")

    cast = harness.run_cli("audit-export", "--data-dir", str(data_dir), "--cast", tag)
    assert cast.returncode == 0, cast.stderr
    shown = output_of(check_asciicast_v2(cast.stdout.encode()))
    assert shown.count("visible-42") == 1 and "Pw: " in shown
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert [p for p in files if secret.encode() in p.read_bytes()] == []
    assert secret not in events_file.read_text()

    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    events = [e for e in events if e["session"] == tag]
    assert [(e["event"], e.get("seq")) for e in events] == [
        ("session_start", None),
        ("command", 1),
        ("command", 2),
        ("session_end", None),
    ]
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA)
    assert events[1]["command"] == "echo visible-$((40+2))"
    harness.wait_for(
        lambda: (
            sorted(
                json.loads(m.msg)["event_id"]
                for m in syslog_server.messages("imtcp")
                if json.loads(m.msg)["session"] == tag
            )
            == sorted(e["event_id"] for e in events)
        ),
        timeout=DEADLINE_S,
    )
    assert secret not in syslog_server.received.read_text()


def test_restarts_lose_nothing_repeat_nothing_and_tail_goes_on(
    data_dir: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    """SIGKILL, then SIGTERM, of the agent in the middle of a session."""
    events_file = data_dir.parent / "events.jsonl"
    cursor = data_dir / "events.cursor.json"
    tag = f"rs-{secrets.token_hex(3)}"
    args = ["--events-file", str(events_file)]
    data_dir.mkdir(mode=0o700)  # audit-tail needs the directory; the agent fills it
    tail = subprocess.Popen(
        [
            str(harness.BIN / "audit-tail"),
            *("--data-dir", str(data_dir), "--json", "--session", tag, "--wait"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader = harness.LineReader(tail.stdout)
    tailed: list[dict] = []

    def tail_until(n: int) -> None:
        while len(tailed) < n:
            tailed.append(json.loads(reader.readline(timeout=DEADLINE_S)))

    agent = harness.agent(data_dir, *args)
    running = agent.__enter__()
    try:
        child, ssh_pid = open_session(user, server, tag)
        run(child, "echo out-$((10+1))", "out-11")
        run(child, "echo out-$((10+2))", "out-12")
        harness.wait_for(lambda: len(stored(data_dir, tag)) == 2, timeout=DEADLINE_S)
        tail_until(2)
        harness.wait_for(
            lambda: (
                cursor.exists() and json.loads(cursor.read_text())["live"].get(tag) == 2
            ),
            timeout=DEADLINE_S,
        )
        running.process.send_signal(signal.SIGKILL)  # its strace goes on recording
        running.process.wait()
        code, doc = status(data_dir)
        assert code == 4 and "is not running" in doc["problems"][0]
        run(child, "echo out-$((10+3))", "out-13")
        agent.__exit__(None, None, None)

        agent = harness.agent(data_dir, *args)
        running = agent.__enter__()
        run(child, "echo out-$((10+4))", "out-14")
        harness.wait_for(lambda: len(stored(data_dir, tag)) == 4, timeout=DEADLINE_S)
        tail_until(4)
        agent.__exit__(None, None, None)  # SIGTERM: the strace detaches, a gap

        agent = harness.agent(data_dir, *args)
        running = agent.__enter__()
        harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=DEADLINE_S)
        run(child, "echo out-$((10+5))", "out-15")
        harness.wait_for(lambda: len(stored(data_dir, tag)) == 5, timeout=DEADLINE_S)
        tail_until(5)
        close_session(child)
        harness.wait_for(
            lambda: harness.sessions_in(data_dir)[tag].status == "closed",
            timeout=DEADLINE_S,
        )
        harness.wait_for(
            lambda: '"session_end"' in events_file.read_text(), timeout=DEADLINE_S
        )
    finally:
        agent.__exit__(None, None, None)
        tail.send_signal(signal.SIGINT)
        try:
            _, err = tail.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            tail.kill()  # never leave it behind, whatever went wrong
            tail.communicate()
            raise
    assert tail.returncode == 0 and b"Traceback" not in err

    commands = [f"echo out-$((10+{n}))" for n in range(1, 6)]
    assert stored(data_dir, tag) == commands
    assert [(r["seq"], r["command"]) for r in tailed] == list(enumerate(commands, 1))

    cast = harness.run_cli("audit-export", "--data-dir", str(data_dir), "--cast", tag)
    shown = output_of(check_asciicast_v2(cast.stdout.encode()))
    for n in range(11, 16):
        assert shown.count(f"out-{n}\r\n") == 1, (n, shown)
    assert "[bastion-audit: not recorded from" in shown  # the SIGTERM gap, marked

    # Only ours: agents of concurrent test runs on this machine may trace others.
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    events = [e for e in events if e["session"] == tag]
    assert [(e["event"], e.get("seq")) for e in events] == [
        ("session_start", None),
        *[("command", n) for n in range(1, 6)],
        ("session_end", None),
    ]
    assert len(harness.sessions_in(data_dir)[tag].gaps) == 1
