"""strace text to events, on literal lines of the kinds strace 6.1 writes."""

from __future__ import annotations

import codecs

from parsers.events import Chunk, Direction, Marker, Resize
from parsers.strace_lines import StraceDecoder, decode_log

TTY = "/dev/pts/3"


def one(line: bytes, tty: str | None = TTY):
    events = decode_log(line + b"\n", tty)
    assert len(events) == 1, events
    return events[0]


def test_read_and_write_on_the_terminal_by_path_not_number() -> None:
    read = one(b'1795863298.751382 read(4</dev/pts/3>, "echo one\\r", 16384) = 9')
    assert read == Chunk(1795863298.751382, Direction.INPUT, b"echo one\r", 0)
    write = one(b'1795863298.752185 write(17</dev/pts/3>, "one\\r\\n", 5) = 5')
    assert write.direction is Direction.OUTPUT and write.data == b"one\r\n"


def test_other_fds_and_dev_tty_are_not_the_terminal() -> None:
    log = (
        b'1.0 read(3<socket:[6324]>, "\\221\\362H", 3) = 3\n'
        b'1.1 read(4</dev/tty>, "p", 1) = 1\n'  # ssh's password prompt
        b'1.2 write(5</dev/pts/9>, "x", 1) = 1\n'
    )
    assert decode_log(log, TTY) == []
    assert [e.data for e in decode_log(log, None)] == [b"x"]  # any pts when unknown


def test_escapes_default_octal_and_hex() -> None:
    default = one(
        b'1.0 write(5</dev/pts/3>, "\\33[?2004h\\344\\270\\255\\t\\"\\\\", 14) = 14'
    )
    assert default.data == b'\x1b[?2004h\xe4\xb8\xad\t"\\'
    x = one(b'1.0 write(5</dev/pts/3>, "\\x1b\\x5b\\x4b\\xe4\\xb8\\xad", 6) = 6')
    assert x.data == b"\x1b[K\xe4\xb8\xad"
    xx = one(b'1.0 read(4</dev/pts/3>, "\\x6c\\x73\\x0d", 16384) = 3')
    assert xx.data == b"ls\r"
    # strace writes three octal digits when a digit follows, so \0331 is ESC "1".
    assert one(b'1.0 write(5</dev/pts/3>, "\\0331", 2) = 2').data == b"\x1b1"


def test_short_write_keeps_only_what_was_written() -> None:
    assert one(b'1.0 write(5</dev/pts/3>, "abcdef", 6) = 4').data == b"abcd"


def test_failed_and_interrupted_calls_carry_no_data() -> None:
    log = (
        b"1.0 read(4</dev/pts/3>, 0x7ffd6a1c, 16384) = -1 EAGAIN (Resource temporarily unavailable)\n"
        b'1.1 write(5</dev/pts/3>, "x", 1) = -1 EIO (Input/output error)\n'
        b"1.2 read(4</dev/pts/3>,  <unfinished ...>) = ?\n"
        b'1.3 read(4</dev/pts/3>, "", 16384) = 0\n'
    )
    decoder = StraceDecoder(tty=TTY)
    assert decoder.feed(log) == []
    assert decoder.stats.junk == 0


def test_unfinished_and_resumed_pairs_join() -> None:
    log = (
        b"4001 1.000 read(4</dev/pts/3>,  <unfinished ...>\n"
        b'4002 1.100 write(7</dev/pts/5>, "other", 5) = 5\n'
        b'4001 1.200 <... read resumed>"ls\\r", 16384) = 3\n'
        b'[pid  4001] 1.300 write(5</dev/pts/3>, "ls\\r\\n", 4 <unfinished ...>\n'
        b"[pid  4001] 1.400 <... write resumed>) = 4\n"
    )
    events = decode_log(log, TTY)
    assert [(e.time, e.direction, e.data) for e in events] == [
        (1.2, Direction.INPUT, b"ls\r"),  # timed when the call completed
        (1.4, Direction.OUTPUT, b"ls\r\n"),
    ]


def test_a_300_kib_write_in_one_line() -> None:
    payload = bytes(range(256)) * 1200  # 300 KiB, every byte value
    quoted = b"".join(
        b"\\%o" % b if b < 0x20 or b >= 0x7F or b in b'"\\' else bytes([b])
        for b in payload
    )
    # strace's default escaping, as escape_decode reads it back
    assert codecs.escape_decode(quoted)[0] == payload
    line = (
        b'1.0 write(5</dev/pts/3>, "'
        + quoted
        + b'", %d) = %d' % (len(payload), len(payload))
    )
    assert one(line).data == payload


def test_resize_from_tiocgwinsz() -> None:
    line = b"1.0 ioctl(0</dev/pts/3>, TIOCGWINSZ, {ws_row=50, ws_col=200, ws_xpixel=0, ws_ypixel=0}) = 0"
    assert one(line) == Resize(1.0, 50, 200, 0)
    other = b"1.0 ioctl(0</dev/pts/3>, TCGETS, {c_iflag=ICRNL|IXON, ...}) = 0"
    assert decode_log(other + b"\n", TTY) == []


def test_exit_signal_and_lifecycle_lines() -> None:
    log = (
        b'#bastion-audit {"event":"attach","time":5.5,"tracer":"agent","tracer_pid":9}\n'
        b"6.0 --- SIGWINCH {si_signo=SIGWINCH, si_code=SI_KERNEL} ---\n"
        b"strace: Process 123 attached\n"
        b"7.0 +++ exited with 255 +++\n"
        b"8.0 +++ killed by SIGKILL +++\n"
    )
    events = decode_log(log, TTY)
    assert [(e.kind, e.time) for e in events] == [
        ("attach", 5.5),
        ("end", 7.0),
        ("end", 8.0),
    ]
    assert events[1].fields["reason"] == "ssh exited with 255"
    assert events[2].fields["reason"] == "ssh killed by SIGKILL"
    assert all(isinstance(e, Marker) for e in events)


def test_garbage_is_counted_never_raised() -> None:
    log = (
        b"\x00\xff\xfe binary junk\n"
        b'1.0 read(4</dev/pts/3>, "unterminated\n'
        b"1.0 write(5</dev/pts/3> no args\n"
        b"#bastion-audit {not json\n"
        b'#bastion-audit {"event":"nonsense","time":1}\n'
        b'1.0 <... read resumed>"orphan", 1) = 1\n'
        b'1.5 write(5</dev/pts/3>, "ok", 2) = 2\n'
    )
    decoder = StraceDecoder(tty=TTY)
    events = decoder.feed(log)
    assert [e.data for e in events] == [b"ok"]
    assert decoder.stats.junk == 6


def test_half_written_last_line_waits_for_the_rest() -> None:
    line = b'1.0 write(5</dev/pts/3>, "hello", 5) = 5\n'
    decoder = StraceDecoder(tty=TTY)
    assert decoder.feed(line[:20]) == []
    assert decoder.pending_bytes == 20
    (event,) = decoder.feed(line[20:])
    assert event.data == b"hello" and event.offset == 0
    (second,) = decoder.feed(line)
    assert second.offset == len(line)  # offsets count from the start of the log
    assert decoder.offset == 2 * len(line)


def test_hung_up_terminal_path_annotation() -> None:
    """After the pty is gone, -y prints `0</dev/pts/3>(deleted)`: still ours, not junk."""
    log = (
        b'1.0 write(4</dev/pts/3>(deleted), "tcsetattr: Input/output error\\n", 30)'
        b" = -1 EIO (Input/output error)\n"
        b"1.1 ioctl(0</dev/pts/3>(deleted), TCGETS, 0x7ffce4422760) = -1 EIO (Input/output error)\n"
    )
    decoder = StraceDecoder(tty=TTY)
    assert decoder.feed(log) == []
    assert decoder.stats.junk == 0
