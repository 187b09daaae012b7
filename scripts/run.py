"""make run: the agent in the foreground, unless something already audits here.

An agent traces every tagged ssh on its machine unless it is scoped, and
ptrace admits one tracer per process: an unscoped agent started beside
another (the service, a test suite's agent, the sudo mode's strace) races it
for every session, and in strict mode ends the sessions it loses (issue 17:
10 live sessions ended in 22 s). So before it starts the agent, make run
looks for other agents and for tagged ssh clients another tracer holds, and
refuses with one line that says what it found and how to scope. A strace
that writes into this very data directory is not in the way: it is one a
killed agent left behind, and the new agent adopts it.

    python -m scripts.run [--data-dir DIR] [--scope-pid PID] [--dry-run]

--dry-run checks and prints the agent's command line without running it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from agent.config import load_config
from agent.exits import ExitStatus, run_main
from tracer.discovery import SSH_NAMES, read_tracer_pid
from tracer.tags import parse_ssh_argv

PROG = "make run"


@dataclass(frozen=True)
class Auditor:
    """Something that already traces ssh sessions on this machine."""

    pid: int
    what: str  # one phrase: "audit-agent run (data dir ..., every tagged ssh)"


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def _is_agent(argv: list[str]) -> bool:
    """`audit-agent run …`, also as `python …/audit-agent run` or `-m agent run`."""
    head = [os.path.basename(a) for a in argv[:3]]
    if "run" not in argv[1:4]:
        return False
    return "audit-agent" in head or argv[1:3] == ["-m", "agent"]


def other_agents(own: set[int]) -> list[Auditor]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if proc.info["pid"] in own or not _is_agent(argv):
            continue
        scope = _option(argv, "--scope-pid")
        where = _option(argv, "--data-dir") or _option(argv, "--config") or "default"
        reach = f"ssh under pid {scope}" if scope else "every tagged ssh"
        found.append(Auditor(proc.info["pid"], f"audit-agent run ({where}, {reach})"))
    return found


def _in_scope(proc: psutil.Process, scope_pid: int) -> bool:
    if not scope_pid:
        return True
    try:
        return any(p.pid == scope_pid for p in proc.parents())
    except psutil.Error:
        return False


def held_sessions(logs_dir: Path, scope_pid: int) -> list[Auditor]:
    """Tagged ssh clients traced by anything but a strace writing into logs_dir."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if proc.info["name"] not in SSH_NAMES or not argv:
            continue
        tag = parse_ssh_argv(argv).tag
        tracer = read_tracer_pid(proc.info["pid"])
        if tag is None or not tracer or not _in_scope(proc, scope_pid):
            continue
        try:
            tracer_argv = psutil.Process(tracer).cmdline()
        except psutil.Error:
            continue  # it just let go
        log = _option(tracer_argv, "-o")
        if log is not None and Path(log).parent == logs_dir:
            continue  # left by an agent on this data dir: adopted, not raced
        holder = os.path.basename(tracer_argv[0]) if tracer_argv else "?"
        found.append(
            Auditor(tracer, f"{holder} tracing session {tag!r} (ssh {proc.pid})")
        )
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--scope-pid", type=int)
    parser.add_argument("--dry-run", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, lambda: checked_run(args))


def checked_run(args: argparse.Namespace) -> int:
    config = load_config(
        args.config,
        {
            "data_dir": args.data_dir.absolute() if args.data_dir else None,
            "scope_pid": args.scope_pid or None,
        },
    )
    own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = held_sessions(config.logs_dir, config.scope_pid)
    if not config.scope_pid:
        found = other_agents(own) + found
    if found:
        first = found[0]
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        print(
            f"{PROG}: error: already audited here: pid {first.pid}, {first.what}"
            f"{more}; a second agent would race it for each session (strict mode "
            "ends the sessions it loses). Stop it, or audit one process tree: "
            "make run SCOPE_PID=<pid of a shell>",
            file=sys.stderr,
        )
        return ExitStatus.BAD_INPUT
    agent = Path(sys.executable).with_name("audit-agent")
    command = [str(agent), "run", "--data-dir", str(config.data_dir)]
    if args.config is not None:
        command += ["--config", str(args.config)]
    if config.scope_pid:
        command += ["--scope-pid", str(config.scope_pid)]
    if args.dry_run:
        print(" ".join(command))
        return ExitStatus.SUCCESS
    os.execv(command[0], command)
    return ExitStatus.ERROR  # not reached


if __name__ == "__main__":
    sys.exit(main())
