"""`audit-agent run`: the daemon in the foreground (its options, its boundary)."""

from __future__ import annotations

import argparse
import logging

from agent.config import load_config
from agent.daemon.agent import Agent, stop_signals
from agent.escape import LogFormatter
from agent.exits import ExitStatus


def setup_logging(prog: str, verbose: bool = False) -> None:
    """One line per message: file names, hosts and tags come from users."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter(f"{prog}: %(levelname)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler]
    )


def run(prog: str, args: argparse.Namespace) -> int:
    """Configuration from the file, then the flags; run until stopped."""
    config = load_config(
        args.config,
        {
            "data_dir": args.data_dir.absolute() if args.data_dir else None,
            "poll_interval_s": args.poll_interval_s,
            "scope_pid": args.scope_pid,
            "mode": args.mode,
            "events_file": args.events_file.absolute() if args.events_file else None,
            "events_syslog": args.events_syslog,
        },
    )
    setup_logging(prog, args.verbose)
    agent = Agent(config)
    with stop_signals(agent.stop_event):
        agent.run()
    return ExitStatus.SUCCESS
