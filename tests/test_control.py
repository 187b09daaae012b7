"""The daemon's control socket: who is served, bounded requests, the access log,
and an auditor's terminate of a real traced ssh.

The socket and the store are the real ones (in-process for the first tests,
in the running agent for the terminate); callers that are not root run as a
throwaway user in a child process, so SO_PEERCRED sees their real uid.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.access_log import Action
from agent.control import REQUEST_MAX_BYTES, ControlClient, ControlError
from agent.daemon.control import Controller, ControlServer
from agent.daemon.store import Store
from agent.files import Sharing
from agent.reader import load
from tests import harness

pytestmark = [pytest.mark.root]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    # Out of pytest's own 0700 directory: the stranger must reach the socket.
    workdir = Path(tempfile.mkdtemp(prefix="bastion-audit-control."))
    try:
        workdir.chmod(0o755)
        store = Store(tmp_path / "data" / "store", 0.05)
        with store:
            socket_path = workdir / "control.sock"
            controller = Controller(store, None, frozenset({0}))
            with ControlServer(socket_path, controller, Sharing(None)):
                os.chmod(socket_path, 0o666)  # let the stranger connect at all
                yield socket_path, store
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_access_entries_are_numbered_timed_and_stored(
    served: tuple[Path, Store],
) -> None:
    path, store = served
    client = ControlClient(path)
    first = client.access("alice", "auditor", "view", "s1", client="10.0.0.1")
    second = client.access("alice", "auditor", "search", None, "q=rm -rf")
    assert first.ok and second.ok and (first.seq, second.seq) == (1, 2)
    refused = client.access("alice", "auditor", "terminate", "s1")
    assert not refused.ok  # only the agent logs a terminate
    assert not client.access("Robert'); DROP", "auditor", "view").ok
    store.flush()
    entries = load(store.store_dir.parent).access
    assert [(e.seq, e.action, e.session) for e in entries] == [
        (1, Action.VIEW, "s1"),
        (2, Action.SEARCH, None),
    ]
    assert entries[0].actor == "alice" and entries[0].client == "10.0.0.1"
    assert entries[1].time.endswith("Z")


def test_a_request_too_long_or_too_slow_is_refused_and_others_are_served(
    served: tuple[Path, Store],
) -> None:
    path, _ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(b"x" * (REQUEST_MAX_BYTES + 10))
        reply = json.loads(s.makefile().readline())
    assert reply["ok"] is False and "longer than" in reply["message"]
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(str(path))
    slow.sendall(b'{"op": "ping"')  # and never the end of the line
    started = time.monotonic()
    assert ControlClient(path).access("bob", "user", "view", "s2").ok
    waited = time.monotonic() - started
    assert waited < 8.0  # the slow one had its deadline, no more
    assert json.loads(slow.makefile().readline())["ok"] is False
    slow.close()


def test_a_caller_who_is_neither_root_nor_the_web_is_not_served(
    served: tuple[Path, Store], tmp_path: Path
) -> None:
    path, store = served
    code = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from pathlib import Path\n"
        "from agent.control import ControlClient\n"
        "r = ControlClient(Path(sys.argv[1])).access('mallory', 'auditor', 'view')\n"
        "print(r.ok, r.message)\n"
    )
    with harness.test_user(tmp_path, prefix="bcs") as stranger:
        out = subprocess.run(
            ["/usr/bin/python3", "-c", code, str(path), str(harness.REPO)],
            capture_output=True,
            text=True,
            user=stranger.uid,
            check=True,
        ).stdout
    assert out.startswith("False only root and audit-web")
    store.flush()
    assert load(store.store_dir.parent).access == []


def test_no_socket_no_agent_one_line(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="cannot reach the agent"):
        ControlClient(tmp_path / "nothing.sock").access("alice", "auditor", "view")


@pytest.mark.slow
def test_an_auditor_terminates_a_traced_ssh(
    tmp_path: Path, user: harness.TestUser, server: harness.Sshd
) -> None:
    data_dir = tmp_path / "data"
    tag = "cut-me"
    with harness.agent(data_dir) as agent:
        child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
        )
        ssh_pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
        child.send(b"echo before-the-cut\r")
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.export(data_dir, "--session", tag))
        client = ControlClient(data_dir / "control.sock")
        assert not client.terminate(tag, "alice", "  \x1b\x07\t ").ok  # no reason
        reply = client.terminate(tag, "alice", "ticket 42: \u202erm -rf\x1b[31m")
        assert reply.ok, reply.message
        child.expect(b"ended by auditor alice: ticket 42: rm -rf")
        child.expect(pexpect_eof())
        session = harness.wait_for(
            lambda: (
                (s := harness.sessions_in(data_dir).get(tag))
                and s.status == "terminated"
                and s
            ),
            timeout=20,
        )
        # Controls and the RTL override are gone; what is left is plain text.
        assert (
            session.end_reason == "terminated by auditor alice: ticket 42: rm -rf [31m"
        )
        again = client.terminate(tag, "alice", "twice")
        assert not again.ok and "not live" in again.message
        entries = harness.wait_for(
            lambda: (
                [e for e in load(data_dir).access if e.action == "terminate"]
                if len(load(data_dir).access) >= 2
                else None
            )
        )
        assert [(e.actor, e.session, e.ok) for e in entries] == [
            ("alice", tag, True),
            ("alice", tag, False),
        ]
        assert "not live" in entries[1].detail
        assert agent.process.poll() is None


def pexpect_eof() -> type:
    import pexpect

    return pexpect.EOF  # type: ignore[no-any-return]


@pytest.mark.slow
def test_an_auditor_terminates_a_paramiko_session_through_its_audit_shell() -> None:
    from tests import shell_harness

    with shell_harness.bastion() as bastion:
        config = bastion.write_config(
            "paramiko.toml", shell='backend = "paramiko"\naudit_wait_s = 0\n'
        )
        data_dir = bastion.workdir / "data"
        with harness.agent(data_dir, "--config", str(bastion.agent_config)) as agent:
            try:
                terminate_paramiko(
                    shell_harness.run_as_person(bastion, config), data_dir
                )
            except (AssertionError, TimeoutError, pexpect_eof()) as e:
                raise AssertionError(f"{e}\n{agent.log_text()[-3000:]}") from e


def terminate_paramiko(child: Any, data_dir: Path) -> None:
    from tests.shell_harness import MENU_FOOTER, TAG_RE

    child.expect(MENU_FOOTER)
    child.send(b"web1\r")
    child.expect(TAG_RE)
    tag = child.match.group(1).decode()
    child.expect(harness.PROMPT)
    child.send(b"echo via-paramiko\r")
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.export(data_dir, "--session", tag), timeout=30)
    reply = ControlClient(data_dir / "control.sock").terminate(tag, "alice", "ticket 7")
    assert reply.ok, reply.message
    child.expect(b"ended by auditor alice: ticket 7")
    session = harness.wait_for(
        lambda: (
            (s := harness.sessions_in(data_dir).get(tag))
            and s.status == "terminated"
            and s
        ),
        timeout=30,
    )
    assert session.recorder == "paramiko"
    assert session.end_reason == "terminated by auditor alice: ticket 7"
    child.close(force=True)
