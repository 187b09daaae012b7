"""Events to accepted command lines, on logs captured from real sessions.

The logs in tests/data were captured with the agent's strace command line
from ssh sessions to a Debian 12 sshd running bash 5.2 (see each test for what
was typed). The expected lines are what that bash ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parsers.events import Chunk, CommandLine, Direction, LineKind
from parsers.pipeline import commands_from_log
from parsers.strace_lines import decode_log
from parsers.terminal import CommandBuilder

DATA = Path(__file__).parent / "data"

CAPTURES = {
    # echo one; "echo twoo" + 3 backspaces + "o"; ls /etc/pass<TAB>; up-arrow;
    # a 105-character line on an 80-column terminal; exit.
    "bash_basic.strace": [
        "echo one",
        "echo to",
        "ls /etc/passwd",
        "ls /etc/passwd",
        "echo " + "x" * 100,
        "exit",
    ],
    # ls /etc/<TAB><TAB> y (pager) q, pas<TAB>; ls /usr/<TAB><TAB>l<TAB>;
    # Ctrl-R pass Enter; Ctrl-R usr, left arrow, XX Enter; vi with keys typed
    # inside it; three commands pasted while vim exits (vim flushed them, bash
    # never ran them); sleep 1 with "echo typeahead" typed during it; exit.
    "bash_completion_vim_typeahead.strace": [
        "ls /etc/passwd",
        "ls /usr/l",
        "ls /etc/passwd",
        "ls XX/usr/l",
        "vi /tmp/x",
        "sleep 1",
        "echo typeahead",
        "exit",
    ],
    # "echo half" + Ctrl-C; sleep 5 + Ctrl-C; an open quote continued on a
    # second line; read -p with "bob"; read -s with a password; an empty line;
    # Ctrl-D. (Multi-line commands are two lines until the fidelity issue.)
    "bash_ctrl_c_password.strace": [
        "sleep 5",
        'echo "a',
        'b"',
        'read -p "Name: " x',
        'read -s -p "Pw: " x',
    ],
    # strace attached after the first prompt (no ESC[?2004h seen yet), no -P
    # filter, ssh run by sshpass: the fallback path, then readline's markers.
    "bash_late_attach_sshpass.strace": ["echo one", "exit"],
    # strace attached after the prompt was drawn and before the first key:
    # "cat /etc/host" read, then "n", Tab ("ame " echoed), Enter. The keys
    # read before any output begin the line; what precedes their echo is the
    # prompt (here nothing was seen of it). Once, not once per mode.
    "bash_late_attach_keys_first.strace": ["cat /etc/hostname"],
}


def build(events: list, builder: CommandBuilder | None = None) -> list[CommandLine]:
    builder = builder or CommandBuilder()
    return [line for event in events for line in builder.feed(event)]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_captured_sessions(name: str) -> None:
    events = decode_log((DATA / name).read_bytes(), tty="/dev/pts/0")
    assert commands(build(events)) == CAPTURES[name]


def commands(lines: list[CommandLine]) -> list[str]:
    return [line.text for line in lines if line.kind is LineKind.COMMAND]


def test_secrets_typed_without_echo_are_nowhere_in_the_lines() -> None:
    events = decode_log(
        (DATA / "bash_ctrl_c_password.strace").read_bytes(), tty="/dev/pts/0"
    )
    lines = build(events)
    assert all("hunter2" not in (line.text + line.prompt) for line in lines)
    # Typed to `read`, not bash: an input of the command that reads it.
    assert "bob" not in commands(lines)
    assert [(line.text, line.program) for line in lines if line.kind != "command"] == [
        ("bob", 'read -p "Name: " x')
    ]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_resuming_from_any_checkpoint_emits_the_rest_exactly_once(name: str) -> None:
    events = decode_log((DATA / name).read_bytes(), tty="/dev/pts/0")
    lines = build(events)
    for i, line in enumerate(lines):
        cp = line.checkpoint
        rest = [e for e in events if e.offset >= cp.offset]
        resumed = build(rest, CommandBuilder(cp))
        assert commands(resumed) == commands(lines[i + 1 :]), i


def test_chunks_split_anywhere_give_the_same_lines() -> None:
    """ssh's writes fall anywhere: in an escape sequence, in a UTF-8 character."""
    events = decode_log((DATA / "bash_basic.strace").read_bytes(), tty="/dev/pts/0")
    split = []
    for event in events:
        if isinstance(event, Chunk) and event.direction is Direction.OUTPUT:
            for i in range(0, len(event.data), 3):
                split.append(
                    Chunk(
                        event.time, event.direction, event.data[i : i + 3], event.offset
                    )
                )
        else:
            split.append(event)
    assert [line.text for line in build(split)] == CAPTURES["bash_basic.strace"]


def out(data: bytes, t: float = 1.0) -> Chunk:
    return Chunk(t, Direction.OUTPUT, data, 0)


def key(data: bytes, t: float = 1.0) -> Chunk:
    return Chunk(t, Direction.INPUT, data, 0)


PROMPT = b"\x1b[?2004h\x1b]0;u@h: ~\x07\x1b[01;32mu@h\x1b[00m:\x1b[01;34m~\x1b[00m$ "
ACCEPT = b"\r\n\x1b[?2004l\r"


def test_wide_characters_and_utf8_split_across_writes() -> None:
    name = "ls 中文目录".encode()
    events = [out(PROMPT), key(name + b"\r"), out(name[:5]), out(name[5:] + ACCEPT)]
    assert [line.text for line in build(events)] == ["ls 中文目录"]


def test_command_output_is_not_emulated_byte_by_byte() -> None:
    builder = CommandBuilder()
    build([out(PROMPT), key(b"cat big\r"), out(b"cat big" + ACCEPT)], builder)
    build([out(b"line of output\r\n" * 100_000)], builder)
    assert builder.skipping and len(builder.tail) <= 8192
    lines = build([out(PROMPT), key(b"ls\r"), out(b"ls" + ACCEPT)], builder)
    assert [line.text for line in lines] == ["ls"]


def test_keys_typed_in_a_full_screen_program_are_not_commands() -> None:
    events = [
        out(PROMPT),
        key(b"less f\r"),
        out(b"less f" + ACCEPT),
        out(b"\x1b[?1049h\x1b[H\x1b[2Jfile text"),
        key(b"/search\r"),
        out(b"search\r\n"),
        out(b"\x1b[?2004h"),  # a full-screen program's own bracketed paste: ignored
        key(b"q"),
        out(b"\x1b[?1049l"),
        out(PROMPT),
        key(b"pwd\r"),
        out(b"pwd" + ACCEPT),
    ]
    assert [line.text for line in build(events)] == ["less f", "pwd"]


def test_fallback_mode_stops_emulating_bulk_output() -> None:
    """No readline markers (dash): a key pressed during a flood of output."""
    builder = CommandBuilder()
    prompt = b"$ "
    build([out(prompt), key(b"cat big\r"), out(b"cat big\r\n")], builder)
    build([key(b"x"), out(b"line of output\r\n" * 20_000)], builder)
    assert builder.skipping and len(builder.tail) <= 8192
    lines = build([out(b"$ "), key(b"ls\r"), out(b"ls\r\nfile\r\n$ ")], builder)
    assert [line.text for line in lines] == ["ls"]


def test_size_from_the_attach_line() -> None:
    """ssh asked for the size before the tracer attached: the attach line has it."""
    log = (
        b'#bastion-audit {"event":"attach","time":1.0,"tracer":"agent","tracer_pid":9,'
        b'"rows":40,"cols":120}\n'
    )
    events = decode_log(log)
    builder = CommandBuilder()
    build(events, builder)
    assert (builder.screen.lines, builder.screen.columns) == (40, 120)


def test_a_line_is_accepted_once_when_the_typed_ahead_echo_differs() -> None:
    # The late-attach capture with its first echo altered: the keys read
    # before any output no longer match the screen. The fallback path accepts
    # the line at the line feed; ESC[?2004l right after must not add it again.
    log = (DATA / "bash_late_attach_keys_first.strace").read_bytes()
    echo = b'write(5</dev/pts/0>, "cat /etc/host", 13)'
    assert echo in log
    log = log.replace(echo, b'write(5</dev/pts/0>, "cat /etc/hosX", 13)')
    lines = build(decode_log(log, tty="/dev/pts/0"))
    assert len(lines) == 1


# -- a session changes shells: markers or not, decided line by line ----------

DASH_PROMPT = b"$ "


def test_a_nested_shell_without_markers_and_back() -> None:
    """bash (markers) -> dash (none) -> exit -> bash: every line recorded."""
    events = [out(PROMPT), key(b"dash\r"), out(b"dash" + ACCEPT + DASH_PROMPT)]
    events += [key(b"echo in-dash\r"), out(b"echo in-dash\r\nin-dash\r\n$ ")]
    events += [key(b"exit\r"), out(b"exit\r\n")]
    events += [out(PROMPT), key(b"echo back\r"), out(b"echo back" + ACCEPT)]
    assert commands(build(events)) == ["dash", "echo in-dash", "exit", "echo back"]


def test_markers_switched_off_mid_session() -> None:
    bind = b"bind 'set enable-bracketed-paste off'"
    events = [out(PROMPT), key(bind + b"\r"), out(bind + ACCEPT)]
    events += [out(b"u@h:~$ "), key(b"id\r"), out(b"id\r\nuid=1000\r\nu@h:~$ ")]
    events += [key(b"pwd\r"), out(b"pwd\r\n/home/u\r\nu@h:~$ ")]
    assert commands(build(events)) == [bind.decode(), "id", "pwd"]


def test_three_lines_pasted_into_dash() -> None:
    """The kernel echoes all three at once; dash reads them one by one later."""
    events = [out(DASH_PROMPT), key(b"echo p1\recho p2\recho p3\r")]
    events += [out(b"echo p1\r\necho p2\r\necho p3\r\n")]
    events += [out(b"p1\r\n$ p2\r\n$ p3\r\n$ ")]
    assert commands(build(events)) == ["echo p1", "echo p2", "echo p3"]


def test_enter_at_a_password_prompt_pairs_with_no_command() -> None:
    events = [out(DASH_PROMPT), key(b"sudo id\r"), out(b"sudo id\r\n")]
    events += [out(b"[sudo] password for u: "), key(b"hunter2\r"), out(b"\r\n")]
    events += [out(b"uid=0(root)\r\n$ "), key(b"ls\r"), out(b"ls\r\nf\r\n$ ")]
    lines = build(events)
    assert commands(lines) == ["sudo id", "ls"]
    assert all("hunter2" not in line.text + line.prompt for line in lines)


def test_zsh_turns_the_markers_off_before_its_line_feed() -> None:
    eol = b"\x1b[1m\x1b[7m%\x1b[27m\x1b[1m\x1b[0m" + b" " * 79 + b"\r \r\r"
    zprompt = eol + b"\x1b[0m\x1b[27m\x1b[24m\x1b[Jvm% \x1b[K\x1b[?2004h"
    events = [out(zprompt), key(b"echo hi\r"), out(b"e\x08echo hi")]
    events += [out(b"\x1b[?2004l\r\r\nhi\r\n" + zprompt)]
    events += [key(b"echo half"), out(b"e\x08echo half"), key(b"\x03")]
    events += [out(b"\x1b[?2004l\r\r\n" + zprompt)]
    assert commands(build(events)) == ["echo hi"]


def test_zsh_right_prompt_is_not_part_of_the_command() -> None:
    rprompt = b"vm% \x1b[K\x1b[60C[main]\x1b[66D\x1b[?2004h"
    events = [out(rprompt), key(b"ls\r"), out(b"ls\x1b[?2004l\r\r\n")]
    assert commands(build(events)) == ["ls"]


def test_fish_autosuggestion_is_not_what_runs() -> None:
    fprompt = b"\x1b[?2004h\x1b]0;~\x07\x1b[92mu\x1b(B\x1b[m@vm ~> \x1b[K"
    events = [out(fprompt), key(b"ech")]
    events += [out(b"ech\x1b[38;5;240mo hi\r\x1b[11C\x1b[30m\x1b(B\x1b[m")]
    events += [key(b"\r"), out(b"\x1b[K\r\n\x1b[30m\x1b(B\x1b[m\x1b[?2004l")]
    assert commands(build(events)) == ["ech"]


def test_a_command_taller_than_the_screen_is_stored_whole() -> None:
    """issue 15: 20 KB pasted; its first rows scrolled off a 24-row screen."""
    command = b"rm -rf /x; #" + b"p" * 20_000
    events = [out(PROMPT), key(command + b"\r"), out(command + ACCEPT)]
    assert commands(build(events)) == [command.decode()]


def test_python_lines_are_inputs_of_python() -> None:
    """python3's readline sends the markers too; its prompt says who reads."""
    events = [out(PROMPT), key(b"python3\r"), out(b"python3" + ACCEPT)]
    events += [out(b"Python 3.11\r\n\x1b[?2004h>>> "), key(b"import os\r")]
    events += [out(b"import os" + ACCEPT)]
    events += [out(b"\x1b[?2004h>>> "), key(b"\x04"), out(b"\x1b[?2004l\r\r\n")]
    events += [out(PROMPT), key(b"ls\r"), out(b"ls" + ACCEPT)]
    lines = build(events)
    assert [(line.kind, line.text, line.program) for line in lines] == [
        (LineKind.COMMAND, "python3", None),
        (LineKind.INPUT, "import os", "python3"),
        (LineKind.COMMAND, "ls", None),
    ]


def test_a_shell_escape_from_vim_is_an_input_of_vim() -> None:
    events = [out(PROMPT), key(b"vi f\r"), out(b"vi f" + ACCEPT)]
    events += [out(b"\x1b[?1049h\x1b[H\x1b[2J~\r\n~"), key(b":!id\r")]
    events += [out(b"\x1b[24;1H:!id\r\x1b[?1049l\r\nuid=1000\r\n")]
    events += [out(b"Press ENTER or type command to continue"), key(b"\r")]
    events += [out(b"\x1b[?1049h~\r\n~"), key(b":q\r"), out(b"\x1b[?1049l")]
    events += [out(PROMPT), key(b"ls\r"), out(b"ls" + ACCEPT)]
    lines = build(events)
    assert [(line.kind, line.text, line.program) for line in lines] == [
        (LineKind.COMMAND, "vi f", None),
        (LineKind.INPUT, ":!id", "vi f"),
        (LineKind.COMMAND, "ls", None),
    ]


def test_a_continuation_line_typed_before_its_prompt_is_drawn() -> None:
    """Live: the keys of `second"` were read before bash drew `> ` for them."""
    events = [out(PROMPT), key(b'echo "first\r'), key(b'second"\r')]
    events += [out(b'echo "first' + ACCEPT + b'\x1b[?2004h> second"' + ACCEPT)]
    events += [out(b"first\r\nsecond\r\n" + PROMPT)]
    assert commands(build(events)) == ['echo "first', 'second"']


def test_a_line_typed_right_after_a_reattach_is_a_command() -> None:
    """Captured from test_operator_e2e's restart: the agent stopped (detach), a
    new one attached while the prompt stood unseen, and the next line was typed
    and echoed in one write each. Its keys are a late attach's: their echo and
    ESC[?2004l accept them (a regression: the line was lost)."""
    log = (DATA / "bash_reattach_after_stop.strace").read_bytes()
    assert [c.text for c in commands_from_log(log)] == [
        f"echo out-$((10+{n}))" for n in range(1, 6)
    ]
