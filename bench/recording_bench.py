"""Ingest of a session log heavy with output, with the recording on and off.

A synthetic log of a bash session that prints a lot (`cat` of a big file: lines
of text in writes of a few KiB, a keystroke every so often) goes through the real ingest, store and
recorder, once with recording and once without, side by side in one run; the
ratio is what to read. The burst cap is set high enough that all of it is
recorded (the worst case).

    .venv/bin/python -m bench.recording_bench [--mib 64]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import tempfile
import time
from pathlib import Path

from agent.daemon.ingest import Ingest
from agent.daemon.recorder import Recorder
from agent.daemon.store import Store

START = 1_800_000_000.0
WRITE_BYTES = 4096


def start_line() -> bytes:
    argv = base64.b64encode(b"ssh\0bob@db1\0").decode()
    fields = {
        "event": "start",
        "v": 1,
        "time": START,
        "tag": "bench",
        "ssh_pid": 4242,
        "start_ticks": 1,
        "started_at": START,
        "uid": 1000,
        "user": "alice",
        "tty": "/dev/pts/0",
        "argv_b64": argv,
    }
    return b"#bastion-audit " + json.dumps(fields).encode() + b"\n"


def make_log(path: Path, mib: int) -> int:
    """A log with `mib` MiB of terminal output; its size in bytes."""
    text = "".join(f"row {n:06d}: some output of a command\\r\\n" for n in range(100))
    size = 0
    # bash with readline: a prompt, `cat big` accepted, then its output.
    prompt = "\\33[?2004h$ "
    accepted = "cat big\\r\\n\\33[?2004l\\r"
    with open(path, "wb") as f:
        f.write(start_line())
        t = START + 1
        f.write(f'{t:.6f} write(5</dev/pts/0>, "{prompt}", 10) = 10\n'.encode())
        f.write(f'{t:.6f} read(4</dev/pts/0>, "cat big\\r", 16384) = 8\n'.encode())
        f.write(f'{t:.6f} write(5</dev/pts/0>, "{accepted}", 19) = 19\n'.encode())
        n = 0
        while size < mib << 20:
            t += 0.001
            n += 1
            if n % 50 == 0:
                f.write(f'{t:.6f} read(4</dev/pts/0>, "j", 16384) = 1\n'.encode())
            line = f'{t:.6f} write(5</dev/pts/0>, "{text}", {WRITE_BYTES}) = {WRITE_BYTES}\n'
            f.write(line.encode())
            size += WRITE_BYTES
        f.write(f"{t + 1:.6f} +++ exited with 0 +++\n".encode())
    return path.stat().st_size


def ingest_seconds(log: bytes, recording: bool) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="recording-bench."))
    try:
        (tmp / "logs").mkdir()
        (tmp / "logs" / "bench.strace").write_bytes(log)
        store = Store(tmp / "store", 1.0)
        store.open()
        recorder = Recorder(tmp, 1 << 40, 1 << 40) if recording else None
        ingest = Ingest(tmp / "logs", store, 0.0, recorder)
        t0 = time.perf_counter()
        ingest.scan()
        while ingest.followers and not all(
            f.finished for f in ingest.followers.values()
        ):
            ingest.process_all()
        store.flush()
        if recorder is not None:
            recorder.close_all()
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64, help="MiB of terminal output")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="recording-bench-log."))
    try:
        size = make_log(tmp / "bench.strace", args.mib)
        log = (tmp / "bench.strace").read_bytes()
    finally:
        shutil.rmtree(tmp)
    off = min(ingest_seconds(log, False) for _ in range(2))
    on = min(ingest_seconds(log, True) for _ in range(2))
    print(f"log {size / 1e6:.0f} MB with {args.mib} MiB of output")
    print(f"{'recording':>10} {'ingest s':>9} {'MiB/s':>7}")
    print(f"{'off':>10} {off:>9.2f} {args.mib / off:>7.1f}")
    print(f"{'on':>10} {on:>9.2f} {args.mib / on:>7.1f}")
    print(f"on/off: {on / off:.2f}")


if __name__ == "__main__":
    main()
