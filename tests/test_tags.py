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


def test_dash_p_before_openssh_9_4_is_a_flag() -> None:
    """Debian 12's ssh (9.2p1) takes -P as an old flag: `foo` is the host there."""
    modern = parse_ssh_argv(["ssh", "-P", "foo", "alice@db1"], "OpenSSH_9.4p1")
    assert (modern.tag, modern.host) == ("foo", "db1")
    old = parse_ssh_argv(["ssh", "-P", "foo", "alice@db1"], "OpenSSH_9.2p1")
    assert (old.tag, old.host, old.command) == (None, "foo", ("alice@db1",))
    assert parse_ssh_argv(["ssh", "-o", "Tag=t", "h"], "OpenSSH_9.2p1").tag == "t"


def test_ssh_version_is_read_from_the_binary() -> None:
    from tracer.tags import ssh_version

    with open("/usr/bin/ssh", "rb") as f:
        assert (ssh_version(f.read()) or "").startswith("OpenSSH_")
    assert ssh_version(b"\x7fELF not ssh") is None


@pytest.mark.parametrize(
    ("argv", "remote_tty"),
    [
        (["ssh", "h"], True),
        (["ssh", "h", "uptime"], False),
        (["ssh", "-t", "h", "top"], True),
        (["ssh", "-tt", "h", "top"], True),
        (["ssh", "-T", "h"], False),
        (["ssh", "-o", "RequestTTY=force", "h", "ls"], True),
        (["ssh", "-o", "RequestTTY=no", "h"], False),
    ],
)
def test_remote_tty(argv: list[str], remote_tty: bool) -> None:
    assert parse_ssh_argv(argv).remote_tty is remote_tty


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b\tc", ["a", "b", "c"]),
        ('"a b" c', ["a b", "c"]),
        (r"a\ b", ["a b"]),
        (r"'a\'b'", ["a'b"]),
        ('"AUDIT_SES"SION=t x', ["AUDIT_SESSION=t", "x"]),  # quotes join a name
        (r"\x", ["\\x"]),  # an escape ssh does not know keeps its backslash
        ('"a\\ b"', ["a\\ b"]),  # inside quotes a backslash-space is two characters
        ("a #b", ["a"]),  # a word starting with # ends the line
        ("#x", []),
        ('a "b', []),  # unbalanced: ssh refuses the option
        ("  ", []),
    ],
)
def test_argv_split_is_openssh_s(text: str, words: list[str]) -> None:
    from tracer.tags import argv_split

    assert argv_split(text) == words


def test_a_tag_joined_by_quotes_is_found() -> None:
    argv = ["ssh", "-o", 'SetEnv "AUDIT_SES"SION=q1', "h"]
    assert parse_ssh_argv(argv).tag == "q1"


@pytest.mark.parametrize(
    ("raw", "maybe"),
    [
        (b"ssh\0h\0", False),
        (b"ssh\0-p\x002222\0-l\0bob\0h\0", False),
        (b"ssh\0-Z\0t\0h\0", True),
        (b"ssh\0-tZt\0h\0", True),
        (b"ssh\0-P\0t\0h\0", True),
        (b"ssh\0-o\0SetEnv AUDIT_SESSION=t\0h\0", True),
        (b'ssh\0-o\0"setenv" x=1\0h\0', True),
        (b"ssh\0-oTAG=t\0h\0", True),
    ],
)
def test_the_first_look_never_misses_a_tag_form(raw: bytes, maybe: bool) -> None:
    from tracer.tags import may_carry_tag

    assert may_carry_tag(raw) is maybe
    if not maybe:
        argv = [a.decode() for a in raw.split(b"\0") if a]
        assert parse_ssh_argv(argv).tag is None


def test_a_huge_argv_is_read_as_ssh_reads_it() -> None:
    """1.5 MB of quoted SetEnv values (speed: test_tracer_attacks, bench)."""
    value = "SetEnv=" + " ".join(['"V=' + "x" * 96 + '"'] * 100) + " AUDIT_SESSION=z"
    first = parse_ssh_argv(["ssh", *["-o", value] * 150, "h"])
    assert (first.tag, first.host) == ("z", "h")
