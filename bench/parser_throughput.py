"""Parser throughput on a session with large output (a 50 MB `cat`).

    sudo .venv/bin/python -m bench.parser_throughput [--log FILE] [--mb 50]

Without --log it records one real session first (throwaway sshd and user, the
agent's strace): `cat` of a file of MB megabytes of text lines. Then, side by
side on that log: a plain read of it, the strace decoder alone, and the whole
parser (decoder, terminal emulation, command assembly), each in a fresh
process so that its peak memory is its own; the whole parser also runs on the
first tenth of the log, to show memory does not grow with the output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 1 << 20


def measure(mode: str, path: str, limit: int) -> dict[str, float]:
    from parsers.pipeline import CommandPipeline
    from parsers.strace_lines import StraceDecoder

    decoder = StraceDecoder()
    pipeline = CommandPipeline()
    commands = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        read = 0
        while read < limit:
            data = f.read(min(CHUNK, limit - read))
            if not data:
                break
            read += len(data)
            if mode == "read":
                data.count(b"\n")
                continue
            events = decoder.feed(data)
            if mode == "parse":
                for event in events:
                    commands += len(pipeline.feed(event))
    elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed,
        "bytes": read,
        "rss_mb": peak_rss_mb(),
        "commands": commands,
    }


def peak_rss_mb() -> float:
    """VmHWM: unlike ru_maxrss it starts afresh at exec, not at the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_isolated(mode: str, path: Path, limit: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.parser_throughput",
            "--measure",
            mode,
            "--log",
            str(path),
            "--limit",
            str(limit),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def record_session(workdir: Path, megabytes: int) -> Path:
    """One real session that cats a large text file; the agent's log of it."""
    from tests import harness

    workdir.chmod(0o755)
    data_dir = workdir / "data"
    config = workdir / "agent.toml"
    config.write_text("log_retention_s = 86400\n")
    with (
        harness.sshd(workdir) as server,
        harness.test_user(workdir, "thr") as user,
        harness.agent(data_dir, "--config", str(config)),
    ):
        big = user.home / "big.txt"
        line = (
            b"%08d "
            + b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV"
            + b"\n"
        )
        with open(big, "wb") as f:
            for n in range(megabytes * (1 << 20) // 70):
                f.write(line % n)
        child = harness.spawn_ssh(
            harness.ssh_argv(user, server, "-o", "SetEnv=AUDIT_SESSION=throughput")
        )
        child.timeout = 600
        # pexpect searches its whole buffer on every read unless told not to.
        child.searchwindowsize = 256
        child.maxread = 1 << 16
        pid = harness.ssh_pid_of(child)
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"cat big.txt; echo cat-done\r")
        child.expect(b"cat-done\r\n")
        child.expect(harness.PROMPT)
        child.sendeof()
        child.close()
        log = data_dir / "logs" / "throughput.strace"
        harness.wait_for(
            lambda: harness.sessions_in(data_dir)["throughput"].status == "closed", 120
        )
        kept = workdir / "throughput.strace"
        os.replace(log, kept)
        return kept


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--measure", choices=("read", "decode", "parse"))
    parser.add_argument("--limit", type=int, default=1 << 62)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, str(args.log), args.limit)))
        return 0
    with tempfile.TemporaryDirectory(prefix="throughput.") as tmp:
        log = args.log or record_session(Path(tmp), args.mb)
        size = log.stat().st_size
        rows = [
            ("plain read", run_isolated("read", log, size)),
            ("decoder", run_isolated("decode", log, size)),
            ("whole parser", run_isolated("parse", log, size)),
            ("whole parser, 1/10", run_isolated("parse", log, size // 10)),
        ]
    base = rows[0][1]["seconds"]
    print(f"log: {size / 1e6:.1f} MB")
    print(f"{'':<20} {'seconds':>8} {'MB/s':>8} {'x read':>7} {'peak RSS MB':>12}")
    for name, r in rows:
        mbps = r["bytes"] / 1e6 / r["seconds"]
        print(
            f"{name:<20} {r['seconds']:>8.2f} {mbps:>8.1f} {r['seconds'] / base:>7.1f}"
            f" {r['rss_mb']:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
