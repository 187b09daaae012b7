"""The transfer relay's pure parts: SFTP framing, the virtual tree, scp commands.

The whole path (real scp, sftp, sshd, audit-shell, agent) is proved in
tests/test_transfers_end_to_end.py; these pin the rules on literal packets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.inventory import Account, Host, Target, TransferRight
from agent.shell import sftp_wire as w
from agent.shell.sftp_relay import SftpRelay
from agent.shell.transfer_paths import host_path, resolve, routes_for
from agent.shell.transfers import TransferRefused, parse_scp
from parsers.chunk_log import decode_chunk_log, encode_transfer
from parsers.events import Transfer, TransferDirection, TransferOutcome

KEY = Path("/k")


def target(host: str, account: str, right: TransferRight, limit: int = 100) -> Target:
    return Target(Host(host, "10.0.0.1"), Account(account, key_file=KEY), right, limit)


def relay(*targets: Target) -> SftpRelay:
    return SftpRelay(routes_for(list(targets)), clock=lambda: 1000.0)


def request(op: w.Op, rid: int, *fields: bytes) -> w.Packet:
    return w.Packet(op, w.u32(rid) + b"".join(fields))


def test_the_tree_lists_only_transfer_grants_and_names_shared_hosts_by_account() -> (
    None
):
    routes = routes_for(
        [
            target("web1", "deploy", TransferRight.BOTH),
            target("db1", "app", TransferRight.DOWNLOAD),
            target("db1", "dba", TransferRight.UPLOAD),
            target("shell1", "ops", TransferRight.NONE),
        ]
    )
    assert [r.label for r in routes] == ["web1", "app@db1", "dba@db1"]


@pytest.mark.parametrize(
    ("path", "up", "expected"),
    [
        ("/", False, (None, None)),
        (".", False, (None, None)),
        ("web1", False, ("web1", None)),
        ("/web1/etc/hosts", False, ("web1", "etc/hosts")),
        ("web1//./tmp/x", False, ("web1", "tmp/x")),
        ("/web1/tmp/../x", True, ("web1", "x")),
        ("/web1/../../..", True, (None, None)),
        ("/web1/tmp/../x", False, "a path with .. is refused"),
        ("/web1/a\nb", False, "control characters in a path are refused"),
    ],
)
def test_resolve(path: str, up: bool, expected: object) -> None:
    assert resolve(path, allow_up=up) == expected


def test_host_paths() -> None:
    assert host_path(None) == "/"
    assert host_path("etc/hosts") == "/etc/hosts"
    assert host_path("~") == "."
    assert host_path("~/notes.txt") == "notes.txt"


@pytest.mark.parametrize(
    "command",
    [
        "scp -t web1/x;touch${IFS}/tmp/p",
        "scp -t web1/$(id)",
        "scp -t 'web1/x'",
        "scp -S /bin/sh -t web1/x",
        "scp -t -f web1/x",
        "scp -t",
        "scp -t a b",
        "scp -tx web1/x",
    ],
)
def test_hostile_scp_commands_are_refused(command: str) -> None:
    with pytest.raises(TransferRefused):
        parse_scp(command)


def test_scp_commands_as_the_client_sends_them() -> None:
    up = parse_scp("scp -v -r -p -d -t -- web1/~/dir")
    assert (up.direction, up.paths, up.recursive, up.preserve, up.to_dir) == (
        "upload",
        ("web1/~/dir",),
        True,
        True,
        True,
    )
    down = parse_scp("scp -f web1/a web1/b")
    assert (down.direction, down.paths) == ("download", ("web1/a", "web1/b"))


def test_framer_keeps_a_cut_packet_and_refuses_a_huge_length() -> None:
    packet = request(w.Op.STAT, 7, w.string("/web1/x")).encode()
    framer = w.Framer()
    assert framer.feed(packet[:5]) == []
    (whole,) = framer.feed(packet[5:])
    assert (whole.op, whole.request_id) == (w.Op.STAT, 7)
    with pytest.raises(w.WireError):
        w.Framer().feed(w.u32(w.MAX_PACKET_BYTES + 1) + b"\x11")


def test_the_root_is_answered_here_and_lists_the_hosts() -> None:
    r = relay(target("web1", "deploy", TransferRight.BOTH))
    ((dest, version),) = r.client(w.Packet(w.Op.INIT, w.u32(3)))
    assert dest is None and version.op == w.Op.VERSION
    ((_, real),) = r.client(request(w.Op.REALPATH, 1, w.string(".")))
    assert real.op == w.Op.NAME and b"/" in real.payload
    ((_, handle),) = r.client(request(w.Op.OPENDIR, 2, w.string("/")))
    opened = w.Reader(handle.payload)
    opened.u32()
    ((_, names),) = r.client(request(w.Op.READDIR, 3, w.string(opened.string())))
    assert names.op == w.Op.NAME and b"web1" in names.payload
    assert r.route is None  # nothing was asked of a host yet


def test_a_direction_the_grant_does_not_give_is_refused_before_the_host() -> None:
    r = relay(target("db1", "app", TransferRight.DOWNLOAD))
    flags = w.u32(w.FXF_WRITE | w.FXF_CREAT | w.FXF_TRUNC) + w.Attrs().encode()
    out = r.client(request(w.Op.OPEN, 5, w.string("/db1/tmp/x"), flags))
    ((dest, reply),) = out
    assert dest is None and w.parse_status(reply)[1] == w.Status.PERMISSION_DENIED
    (t,) = r.take_transfers()
    assert (t.direction, t.path, t.outcome) == ("upload", "/tmp/x", "refused")


def test_a_session_stays_on_its_first_host() -> None:
    r = relay(
        target("web1", "deploy", TransferRight.BOTH),
        target("db1", "app", TransferRight.BOTH),
    )
    assert r.client(request(w.Op.STAT, 1, w.string("/web1/etc"))) == []  # queued
    assert r.route is not None and r.route.label == "web1"
    ((_, denied),) = r.client(request(w.Op.STAT, 2, w.string("/db1/etc")))
    assert "connect again for db1" in w.parse_status(denied)[2]
    forwarded = r.host(w.Packet(w.Op.VERSION, w.u32(3)))
    assert [(d.label if d else None, p.request_id) for d, p in forwarded] == [
        ("web1", 1)
    ]


def test_an_upload_over_the_limit_fails_every_later_reply_and_is_removed() -> None:
    r = relay(target("web1", "deploy", TransferRight.BOTH, limit=10))
    flags = w.u32(w.FXF_WRITE | w.FXF_CREAT) + w.Attrs().encode()
    r.client(request(w.Op.OPEN, 1, w.string("/web1/tmp/x"), flags))
    ((_, opened),) = r.host(w.Packet(w.Op.VERSION, w.u32(3)))
    assert b"/tmp/x" in opened.payload  # the host's own path
    ((_, h),) = r.host(w.handle_reply(1, b"H1"))
    client_handle = w.string(w.Reader(h.payload).rest()[4 + 4 :])
    ((to, first),) = r.client(
        request(w.Op.WRITE, 2, client_handle, w.u64(0), w.string(b"12345678"))
    )
    assert to is not None  # under the limit: relayed
    ((_, over),) = r.client(
        request(w.Op.WRITE, 3, client_handle, w.u64(8), w.string(b"abcd"))
    )
    assert w.parse_status(over)[1] == w.Status.FAILURE
    ((_, late_ok),) = r.host(w.status(2, w.Status.OK, ""))
    assert w.parse_status(late_ok)[1] == w.Status.FAILURE  # OpenSSH sees the last
    r.client(request(w.Op.CLOSE, 4, client_handle))
    out = r.host(w.status(4, w.Status.OK, ""))
    assert [p.op for _, p in out] == [w.Op.REMOVE, w.Op.STATUS]
    (t,) = r.take_transfers()
    assert t.outcome == "refused" and "removed" in t.reason
    assert r.host(w.status(out[0][1].request_id, w.Status.OK, "")) == []


def test_a_transfer_line_round_trips_and_a_forged_one_is_junk() -> None:
    t = Transfer(
        5.5,
        TransferDirection.UPLOAD,
        "/tmp/x",
        "web1/tmp/x",
        3,
        "a" * 64,
        5.0,
        TransferOutcome.COMPLETE,
        "",
    )
    line = encode_transfer(t)
    (back,) = decode_chunk_log(line)
    assert back == Transfer(
        5.5,
        TransferDirection.UPLOAD,
        "/tmp/x",
        "web1/tmp/x",
        3,
        "a" * 64,
        5.0,
        TransferOutcome.COMPLETE,
        "",
        0,
        len(line),
    )
    assert decode_chunk_log(b"5.5 t bm9wZQ==\n") == []  # base64 of "nope"
