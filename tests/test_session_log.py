"""Lifecycle markers on session logs, including a log the ingest already removed."""

from __future__ import annotations

from pathlib import Path

from parsers.strace_lines import MARKER_PREFIX
from tracer.session_log import append_marker, has_ended, mark_unended


def open_log(path: Path) -> Path:
    path.write_bytes(
        MARKER_PREFIX + b'{"event":"start"}\n1234 read(0, "a", 16384) = 1\n'
    )
    return path


def test_marks_an_open_log_once(tmp_path: Path) -> None:
    path = open_log(tmp_path / "t.strace")
    assert mark_unended(path, "end", reason="ssh is gone")
    assert has_ended(path)
    assert not mark_unended(path, "end", reason="ssh is gone")
    assert path.read_bytes().count(b'"event":"end"') == 1


def test_a_removed_log_is_left_alone(tmp_path: Path) -> None:
    # The ingest deletes a closed session's log once stored; the supervisor may
    # find it a moment before. It must neither fail nor recreate the file.
    path = tmp_path / "gone.strace"
    assert not mark_unended(path, "end", reason="ssh is gone")
    assert not mark_unended(path, "detach", reason="agent stopped")
    assert not path.exists()


def test_detach_after_end_is_not_written(tmp_path: Path) -> None:
    path = open_log(tmp_path / "t.strace")
    append_marker(path, "end", reason="ssh exited")
    assert not mark_unended(path, "detach", reason="agent stopped")
    assert path.read_bytes().rstrip().endswith(b"}")
    assert b"detach" not in path.read_bytes()


def test_only_straces_own_exit_line_ends_a_log(tmp_path: Path) -> None:
    path = open_log(tmp_path / "t.strace")
    # A prompt holding the exit text is output: inside a quoted write() line.
    with open(path, "ab") as f:
        f.write(
            b'1712345678.000001 write(5</dev/pts/3>, "+++ exited with 0 +++ $ ", 24)'
            b" = 24\n"
        )
    assert not has_ended(path)
    with open(path, "ab") as f:
        f.write(b"1712345678.000002 +++ exited with 0 +++\n")
    assert has_ended(path)
    killed = open_log(tmp_path / "k.strace")
    with open(killed, "ab") as f:
        f.write(b"1712345678.000002 +++ killed by SIGKILL (core dumped) +++\n")
    assert has_ended(killed)


def test_a_last_line_longer_than_the_tail_is_not_an_end(tmp_path: Path) -> None:
    path = open_log(tmp_path / "t.strace")
    with open(path, "ab") as f:
        f.write(b'1712345678.1 write(5</dev/pts/3>, "' + b"x" * 8000)
        f.write(b'\\n1712345678.2 +++ exited with 0 +++", 8000) = 8000\n')
    assert not has_ended(path)


def test_a_marker_after_a_half_written_line_starts_its_own(tmp_path: Path) -> None:
    path = open_log(tmp_path / "t.strace")
    with open(path, "ab") as f:
        f.write(b"1712345678.1 read(4</dev/pts/3>, ")  # strace killed mid-line
    assert mark_unended(path, "detach", reason="strace was killed")
    assert path.read_bytes().splitlines()[-1].startswith(MARKER_PREFIX)
