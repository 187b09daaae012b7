"""Session recordings on real files: asciicast v2, idempotent, capped, keys left out.

The ingest runs here without its threads (scan, process, flush, stop), so that
a test can stop it anywhere a crash could: after the recording was committed
but before the store wrote the checkpoint, or with events appended to the
cast that were never committed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import pexpect
import pytest

from agent.casts import cast_path, read_cast
from agent.daemon.ingest import Ingest
from agent.daemon.recorder import Recorder
from agent.daemon.store import Store
from tests.harness import BIN, run_cli

DATA = Path(__file__).parent / "data"
BIG = 1 << 30


def start_line(tag: str, started_at: float, pid: int = 4242) -> bytes:
    argv = base64.b64encode(b"ssh\0-p\0002200\0bob@db1\0").decode()
    fields = {
        "event": "start",
        "v": 1,
        "time": started_at,
        "tag": tag,
        "ssh_pid": pid,
        "start_ticks": 77,
        "started_at": started_at,
        "uid": 1000,
        "user": "alice",
        "tty": "/dev/pts/0",
        "argv_b64": argv,
    }
    return b"#bastion-audit " + json.dumps(fields).encode() + b"\n"


def fixture_log(name: str, tag: str = "s1") -> bytes:
    body = (DATA / name).read_bytes()
    first = float(body.split(b" ", 1)[0])
    return start_line(tag, first - 1.0) + body


def run_agent_once(
    data_dir: Path,
    *,
    flush: bool = True,
    max_bytes: int = BIG,
    burst: int = BIG,
) -> None:
    """One agent run over the logs as they are; flush=False: it crashed."""
    store = Store(data_dir / "store", 0.05)
    store.open()
    recorder = Recorder(data_dir, max_bytes, burst)
    ingest = Ingest(data_dir / "logs", store, 0.0, recorder)
    ingest.scan()
    ingest.process_all()
    if flush:
        store.flush()
    recorder.close_all()


def record_whole(tmp: Path, log: bytes, **limits: int) -> bytes:
    data_dir = tmp / "whole"
    (data_dir / "logs").mkdir(parents=True)
    (data_dir / "logs" / "s1.strace").write_bytes(log)
    run_agent_once(data_dir, **limits)
    return cast_path(data_dir, "s1").read_bytes()


def check_asciicast_v2(data: bytes) -> list[list]:
    """The file as asciicast v2 requires it; its events."""
    lines = data.decode("utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert isinstance(header["width"], int) and isinstance(header["height"], int)
    assert isinstance(header["timestamp"], int)
    events = [json.loads(line) for line in lines[1:]]
    last = 0.0
    for event in events:
        t, code, text = event
        assert isinstance(t, float) and t >= last, event
        last = t
        assert code in ("o", "m", "r") and isinstance(text, str), event
        if code == "r":
            assert re.fullmatch(r"\d+x\d+", text)
    return events


def output_of(events: list[list]) -> str:
    return "".join(text for _, code, text in events if code == "o")


@pytest.mark.parametrize("crash", [False, True], ids=["clean-stops", "crashes"])
def test_restarts_neither_lose_nor_repeat_output(tmp_path: Path, crash: bool) -> None:
    log = fixture_log("bash_basic.strace")
    reference = record_whole(tmp_path, log)
    data_dir = tmp_path / "data"
    path = data_dir / "logs" / "s1.strace"
    path.parent.mkdir(parents=True)
    # Stop at arbitrary bytes, most of them in the middle of a line.
    for k in range(1, 8):
        with open(path, "ab") as f:
            f.write(
                log[path.stat().st_size if path.exists() else 0 : len(log) * k // 8]
            )
        run_agent_once(data_dir, flush=not crash)
    with open(path, "ab") as f:
        f.write(log[path.stat().st_size :])
    run_agent_once(data_dir)
    cast = cast_path(data_dir, "s1").read_bytes()
    assert cast == reference
    events = check_asciicast_v2(cast)
    shown = output_of(events)
    for once in ("echo one", "ls /etc/passwd\r", "Connection to 127.0.0.1 closed"):
        assert shown.count(once) == 1, once
    state = json.loads((data_dir / "casts" / "s1.cast.state").read_text())
    assert state["closed"] is True


def test_events_after_the_committed_size_are_cut_and_come_again(tmp_path: Path) -> None:
    log = fixture_log("bash_basic.strace")
    reference = record_whole(tmp_path, log)
    data_dir = tmp_path / "data"
    path = data_dir / "logs" / "s1.strace"
    path.parent.mkdir(parents=True)
    path.write_bytes(log[: len(log) // 2])
    run_agent_once(data_dir)
    with open(cast_path(data_dir, "s1"), "ab") as f:
        f.write(b'[9.0, "o", "written but never committed"]\n[9.5, "o", "half')
    path.write_bytes(log)
    run_agent_once(data_dir)
    assert cast_path(data_dir, "s1").read_bytes() == reference


def test_keystrokes_are_never_recorded(tmp_path: Path) -> None:
    """`read -s` hides a password from the screen; the keys would hold it."""
    log = fixture_log("bash_ctrl_c_password.strace")
    assert b'"hunter2\\r"' in log  # typed, as ssh read it
    cast = record_whole(tmp_path, log)
    assert b"hunter2" not in cast
    events = check_asciicast_v2(cast)
    shown = output_of(events)
    assert "Pw: " in shown and "Name: " in shown and "bob" in shown  # echoed


def test_recordings_are_root_only(tmp_path: Path) -> None:
    record_whole(tmp_path, fixture_log("bash_basic.strace"))
    casts = tmp_path / "whole" / "casts"
    assert casts.stat().st_mode & 0o777 == 0o700
    for path in casts.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def synthetic_log(started_at: float, chunks: list[tuple[str, bytes]]) -> bytes:
    """A log of writes ("o") and reads ("i") to the terminal, 0.1 s apart."""
    lines = [start_line("s1", started_at)]
    for n, (kind, data) in enumerate(chunks):
        t = started_at + 1 + n / 10
        text = "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
            for b in data
        )
        call = "write(5" if kind == "o" else "read(4"
        size = len(data)
        lines.append(
            f'{t:.6f} {call}</dev/pts/0>, "{text}", {size}) = {size}\n'.encode()
        )
    lines.append(f"{started_at + 99:.6f} +++ exited with 0 +++\n".encode())
    return b"".join(lines)


def test_bulk_output_is_capped_and_the_cut_is_marked(tmp_path: Path) -> None:
    block = b"x" * 999 + b"\n"
    chunks = [("o", block)] * 12  # a `cat` of 12 KB without a key pressed
    chunks += [("i", b"q"), ("o", b"after the key\r\n")]
    chunks += [("o", block), ("i", b"j")] * 40  # more than the session may keep
    cast = record_whole(
        tmp_path, synthetic_log(1_800_000_000.0, chunks), max_bytes=20_000, burst=5_000
    )
    events = check_asciicast_v2(cast)
    markers = [text for _, code, text in events if code == "m"]
    assert markers == [
        "recording paused: more than 4.9 KiB of output without a keystroke",
        "recording resumed: 7.8 KiB of output were not recorded",  # 8 blocks
        "recording stopped: this session's output passed 19.5 KiB",
        "session ended; 32.2 KiB of output not recorded",  # 8 + 25 blocks
    ]
    shown = output_of(events)
    assert "[bastion-audit: recording paused" in shown  # also on the screen
    assert "after the key" in shown
    assert len(cast) < 20_000 + 4_000
    kept = shown.count("x" * 999)
    assert 4 <= kept < 20


def test_asciinema_plays_the_recording(tmp_path: Path) -> None:
    if shutil.which("asciinema") is None:
        pytest.skip("asciinema is not installed (make test installs it)")
    record_whole(tmp_path, fixture_log("bash_basic.strace"))
    player = pexpect.spawn(
        "asciinema",
        ["play", "-s", "50", str(cast_path(tmp_path / "whole", "s1"))],
        dimensions=(24, 80),
        env={**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8"},
        timeout=30,
    )
    player.expect("Connection to 127.0.0.1 closed")
    player.expect(pexpect.EOF)
    player.close()
    assert player.exitstatus == 0


def test_export_cast_and_replay(tmp_path: Path) -> None:
    record_whole(tmp_path, fixture_log("bash_basic.strace"))
    data_dir = tmp_path / "whole"
    cast = read_cast(cast_path(data_dir, "s1"))
    out = run_cli("audit-export", "--data-dir", str(data_dir), "--cast", "s1")
    assert (out.returncode, out.stdout.encode()) == (0, cast)
    target = tmp_path / "s1.cast"
    out = run_cli(
        "audit-export", "--data-dir", str(data_dir), "--cast", "s1", "-o", str(target)
    )
    assert out.returncode == 0 and target.read_bytes() == cast
    missing = run_cli("audit-export", "--data-dir", str(data_dir), "--cast", "nope")
    assert (missing.returncode, missing.stderr) == (
        2,
        f"audit-export: error: no session 'nope' in {data_dir}\n",
    )

    replay = pexpect.spawn(
        str(BIN / "audit-replay"),
        ["--data-dir", str(data_dir), "--speed", "100", "s1"],
        dimensions=(24, 80),
        env={**os.environ, "TERM": "xterm-256color"},
        timeout=30,
    )
    replay.expect("Connection to 127.0.0.1 closed")
    replay.expect(pexpect.EOF)
    shown = replay.before
    replay.close()
    assert replay.exitstatus == 0
    assert b"\x1b]0;" not in shown  # window titles (OSC) are not replayed


def test_replay_stops_on_ctrl_c_and_puts_the_terminal_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "casts").mkdir(parents=True)
    cast_path(data_dir, "slow").write_text(
        '{"version": 2, "width": 80, "height": 24}\n'
        '[0.1, "o", "\\u001b[?1049hfull screen program"]\n'
        '[60.0, "o", "much later"]\n'
    )
    replay = pexpect.spawn(
        str(BIN / "audit-replay"),
        ["--data-dir", str(data_dir), "--idle-limit", "60", "slow"],
        timeout=30,
    )
    replay.expect("full screen program")
    replay.sendintr()
    replay.expect(pexpect.EOF)
    replay.close()
    assert replay.exitstatus == 0
    assert b"\x1b[?1049l" in replay.before  # the alternate screen left


def test_a_recording_of_another_ssh_under_the_same_id_is_set_aside(
    tmp_path: Path,
) -> None:
    """A lost store shard lets a session id come again for another ssh."""
    record_whole(tmp_path, fixture_log("bash_basic.strace"))
    data_dir = tmp_path / "whole"
    old = cast_path(data_dir, "s1").read_bytes()
    shutil.rmtree(data_dir / "store")
    body = fixture_log("bash_ctrl_c_password.strace")
    (data_dir / "logs" / "s1.strace").write_bytes(body.replace(b"4242", b"5555", 1))
    run_agent_once(data_dir)
    assert b"Pw: " in cast_path(data_dir, "s1").read_bytes()
    kept = sorted(p.name for p in (data_dir / "quarantine").iterdir())
    assert [name.rsplit(".", 1)[0] for name in kept] == ["s1.cast", "s1.cast.state"]
    (old_copy,) = [
        p for p in (data_dir / "quarantine").iterdir() if ".state" not in p.name
    ]
    assert old_copy.read_bytes() == old


def test_the_state_file_is_rewritten_in_place(tmp_path: Path) -> None:
    """One sector written over the old one; a longer file left by an earlier
    version is cut to it, and what is read back is the new state."""
    from agent.daemon.cast_state import STATE_BYTES, CastState

    path = tmp_path / "s.cast.state"
    path.write_text('{"size": 1, "pending": "' + "0" * 900 + '"}')
    inode = path.stat().st_ino
    CastState(size=42, offset=7).save(path)
    assert path.stat().st_size == STATE_BYTES and path.stat().st_ino == inode
    loaded = CastState.load(path)
    assert loaded is not None and (loaded.size, loaded.offset) == (42, 7)
