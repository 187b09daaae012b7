"""Capture the fidelity corpus: real sessions, their logs, bash's own history.

    sudo .venv/bin/python -m bench.corpus.capture [--only NAME,...]

Runs every case of bench/corpus/cases.py against a throwaway sshd with two
throwaway users while the agent traces them, then writes for each case
bench/corpus/data/NAME.strace (the agent's log, bulk output trimmed) and
NAME.truth.json (what the remote bash recorded). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.corpus.cases import CASES
from bench.corpus.runner import environment, run_cases
from bench.corpus.trim import trim_log
from parsers.strace_lines import decode_log
from parsers.terminal import CommandBuilder
from tests import harness

DATA = Path(__file__).parent / "data"


def lines_of(log: bytes) -> list[str]:
    builder = CommandBuilder()
    return [line.text for event in decode_log(log) for line in builder.feed(event)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--parallel", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("capture: error: run as root (test users, sshd, strace)", file=sys.stderr)
        return 2
    cases = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corpus.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        config = workdir / "agent.toml"
        config.write_text("log_retention_s = 86400\n")
        data_dir = workdir / "data"
        with (
            environment(workdir) as (server, users),
            harness.agent(data_dir, "--config", str(config)),
        ):
            truths = run_cases(cases, users, server, parallel=args.parallel)

            def open_sessions() -> list[str]:
                stored = harness.sessions_in(data_dir)
                return [
                    c.name
                    for c in cases
                    if c.name not in stored or stored[c.name].status != "closed"
                ]

            try:
                harness.wait_for(lambda: not open_sessions(), timeout=60)
            except TimeoutError:
                stuck = open_sessions()
                print(
                    f"capture: error: not closed in the store: {stuck}", file=sys.stderr
                )
                for name in stuck:
                    log = data_dir / "logs" / f"{name}.strace"
                    tail = log.read_bytes()[-300:] if log.exists() else b"(no log)"
                    print(f"  {name}: {tail!r}", file=sys.stderr)
                print(
                    (data_dir.parent / "data.agent.log").read_text()[-3000:],
                    file=sys.stderr,
                )
                return 1
        for case in cases:
            log = (data_dir / "logs" / f"{case.name}.strace").read_bytes()
            trimmed = trim_log(log)
            if lines_of(trimmed) != lines_of(log):
                trimmed = log  # the bulk is the command (a long paste): kept whole
            (DATA / f"{case.name}.strace").write_bytes(trimmed)
            (DATA / f"{case.name}.truth.json").write_text(
                json.dumps(truths[case.name], ensure_ascii=False, indent=1) + "\n"
            )
            print(
                f"{case.name}: {len(truths[case.name])} commands, "
                f"log {len(log)} -> {len(trimmed)} bytes"
            )
    versions = {
        "bash": subprocess.run(
            ["bash", "--version"], capture_output=True, text=True
        ).stdout.split("\n")[0],
        "ssh": subprocess.run(
            ["ssh", "-V"], capture_output=True, text=True
        ).stderr.strip(),
        "strace": subprocess.run(
            ["strace", "-V"], capture_output=True, text=True
        ).stdout.split("\n")[0],
        "kernel": platform.release(),
    }
    (DATA / "VERSIONS.json").write_text(json.dumps(versions, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
