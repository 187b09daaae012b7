"""ssh argv to session tag and destination, the way ssh itself reads argv."""

from __future__ import annotations

import pytest

from tracer.tags import parse_ssh_argv, valid_tag


@pytest.mark.parametrize(
    ("argv", "tag", "source"),
    [
        (["ssh", "-Z", "t1", "h"], "t1", "-Z"),
        (["ssh", "-Zt1", "h"], "t1", "-Z"),
        (["ssh", "-tZ", "t1", "h"], "t1", "-Z"),
        (["ssh", "-o", "SetEnv=AUDIT_SESSION=t2", "h"], "t2", "SetEnv"),
        (["ssh", "-oSetEnv=AUDIT_SESSION=t2", "h"], "t2", "SetEnv"),
        (["ssh", "-o", "SetEnv AUDIT_SESSION=t2", "h"], "t2", "SetEnv"),
        (["ssh", "-o", "setenv = A=1 AUDIT_SESSION=t2 B=2", "h"], "t2", "SetEnv"),
        (["ssh", "-o", 'SetEnv "AUDIT_SESSION=t2"', "h"], "t2", "SetEnv"),
        (["ssh", "-P", "t3", "h"], "t3", "-P"),
        (["ssh", "-o", "Tag=t3", "h"], "t3", "Tag"),
        (["ssh", "h", "-Z", "late"], "late", "-Z"),  # options right after the host
        (
            [
                "ssh",
                "-o",
                "SetEnv=AUDIT_SESSION=a",
                "-o",
                "SetEnv=AUDIT_SESSION=b",
                "h",
            ],
            "a",
            "SetEnv",
        ),
        (["ssh", "-Z", "z", "-o", "SetEnv=AUDIT_SESSION=s", "h"], "z", "-Z"),
    ],
)
def test_tag_spellings(argv: list[str], tag: str, source: str) -> None:
    ssh = parse_ssh_argv(argv)
    assert (ssh.tag, ssh.tag_source) == (tag, source)


@pytest.mark.parametrize(
    "argv",
    [
        ["ssh", "h"],
        ["ssh", "h", "echo", "AUDIT_SESSION=x"],  # part of the remote command
        ["ssh", "h", "ssh", "-Z", "x", "other"],  # the remote command's own ssh
        ["ssh", "-o", "SendEnv=AUDIT_SESSION", "h"],
        ["ssh", "--", "h", "-Z", "x"],
        ["ssh", "-l", "-Z", "h"],  # -Z is -l's argument here
    ],
)
def test_not_tagged(argv: list[str]) -> None:
    assert parse_ssh_argv(argv).tag is None


@pytest.mark.parametrize(
    "bad",
    ["../../etc/x", "a;rm -rf /", "t" * 65, "", "-x", ".hidden", "a b", "ta\ng", "é"],
)
def test_invalid_tags_are_refused_and_reported(bad: str) -> None:
    assert not valid_tag(bad)
    ssh = parse_ssh_argv(["ssh", "-o", f'SetEnv AUDIT_SESSION="{bad}"', "h"])
    assert ssh.tag is None
    if bad:
        assert ssh.bad_tag == bad


def test_longest_valid_tag() -> None:
    assert valid_tag("a" + "b" * 63) and not valid_tag("a" + "b" * 64)


@pytest.mark.parametrize(
    ("argv", "user", "host", "port", "command"),
    [
        (["ssh", "alice@db1"], "alice", "db1", None, ()),
        (["ssh", "-l", "bob", "-p", "2200", "db1"], "bob", "db1", 2200, ()),
        (["ssh", "-p2200", "-lbob", "db1", "uptime"], "bob", "db1", 2200, ("uptime",)),
        (["ssh", "ssh://carol@db1:2222"], "carol", "db1", 2222, ()),
        (["ssh", "-l", "first", "second@db1"], "first", "db1", None, ()),  # first wins
        (["ssh", "second@db1", "-l", "first"], "second", "db1", None, ()),
        (["ssh", "-o", "User=u", "-o", "Port=99", "db1"], "u", "db1", 99, ()),
        (["ssh", "-p", "22", "-o", "Port=99", "db1"], None, "db1", 22, ()),
        (["ssh", "a@b@db1"], "a@b", "db1", None, ()),
        (["ssh", "-p", "notaport", "db1"], None, "db1", None, ()),
        (["ssh", "-tt", "db1", "sudo", "-i"], None, "db1", None, ("sudo", "-i")),
    ],
)
def test_destination(argv, user, host, port, command) -> None:
    ssh = parse_ssh_argv(argv)
    assert (ssh.remote_user, ssh.host, ssh.port, ssh.command) == (
        user,
        host,
        port,
        command,
    )
