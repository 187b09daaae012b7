"""`audit-agent key`, `prune`, `hold` and `unhold`: root's other commands.

`prune` never races the running agent's writer: it takes the data
directory's lock (agent/daemon/lock.py) and prunes itself when no agent
runs, and asks the running agent (agent/daemon/retention.py) otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from agent import AgentError
from agent.config import Config, load_config
from agent.daemon.lock import LockError, prune_lock
from agent.daemon.preflight import read_sharing
from agent.daemon.retention import REQUESTS_DIR, Policy, prune_all
from agent.daemon.signer import Chain, Signer
from agent.daemon.store import Store
from agent.exits import ExitStatus
from agent.files import write_atomic
from agent.holds import Hold, holds_locked, read_holds, write_holds
from agent.reader import check_data_dir, load
from agent.records import iso
from agent.status_file import agent_running, read_status

PROG = "audit-agent"
PRUNE_WAIT_S = 600.0  # for the running agent's answer
ANSWER_POLL_S = 0.2


class AdminError(AgentError):
    """A command that cannot be carried out."""


def _esc(text: object) -> str:
    """Stored and typed text, escaped for the terminal (it may be hostile)."""
    return ascii(str(text))[1:-1]


def requester() -> str:
    """Who asks, for the prune record: the sudo user behind root, if any."""
    name = pwd.getpwuid(os.getuid()).pw_name
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and sudo != name else name


def _config(args: argparse.Namespace) -> Config:
    return load_config(
        args.config, {"data_dir": args.data_dir.absolute() if args.data_dir else None}
    )


def show_key(args: argparse.Namespace) -> int:
    """The public key (PEM) on stdout, for `audit-export --verify --public-key`."""
    config = _config(args)
    check_data_dir(config.data_dir)
    signer = Signer.load_or_create(config.data_dir)
    sys.stdout.write(signer.public_pem.decode("ascii"))
    print(f"chain id (key id): {signer.chain_id}", file=sys.stderr)
    return ExitStatus.SUCCESS


# -- prune -------------------------------------------------------------------


def prune(args: argparse.Namespace) -> int:
    config = _config(args)
    check_data_dir(config.data_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(prune_lock(config.data_dir))
        except LockError as e:
            status = read_status(config.data_dir)
            if status is None or not agent_running(status):
                raise AdminError(f"{e}; try again when it is done") from e
            answer = ask_agent(config.data_dir, args.dry_run)
        else:
            answer = prune_here(config, args.dry_run)
    print_answer(answer)
    return ExitStatus.SUCCESS


def prune_here(config: Config, dry_run: bool) -> dict[str, Any]:
    """No agent runs: open the store as its writer and prune."""
    store = Store(
        config.store_dir,
        config.flush_interval_s,
        sharing=read_sharing(config),  # the modes the agent gives, kept
        chain=Chain(Signer.load_or_create(config.data_dir), config.data_dir),
    )
    store.open()
    try:
        done = prune_all(
            store, config.data_dir, Policy.of(config), by=requester(), dry_run=dry_run
        )
    finally:
        store.stop()
    return {"ok": True, "dry_run": dry_run, "at": iso(time.time()), **done.summary()}


def ask_agent(data_dir: Path, dry_run: bool) -> dict[str, Any]:
    """Hand the prune to the running agent and wait for its answer."""
    requests = data_dir / REQUESTS_DIR
    requests.mkdir(mode=0o700, exist_ok=True)
    os.chmod(requests, 0o700)
    name = f"prune-{secrets.token_hex(8)}"
    request, result = requests / f"{name}.json", requests / f"{name}.result.json"
    body = {"dry_run": dry_run, "by": requester(), "at": iso(time.time())}
    write_atomic(request, json.dumps(body).encode("utf-8"))
    deadline = time.monotonic() + PRUNE_WAIT_S
    while not result.exists():
        if time.monotonic() > deadline:
            request.unlink(missing_ok=True)
            raise AdminError(
                f"the running agent did not answer within {PRUNE_WAIT_S:.0f}s"
            )
        time.sleep(ANSWER_POLL_S)
    try:
        answer: dict[str, Any] = json.loads(result.read_bytes())
    finally:
        result.unlink(missing_ok=True)
    if not answer.get("ok"):
        raise AdminError(f"the running agent could not prune: {answer.get('error')}")
    return answer


def print_answer(answer: dict[str, Any]) -> None:
    verb = "would prune" if answer.get("dry_run") else "pruned"
    sessions = answer.get("sessions") or []
    print(
        f"{verb} {len(sessions)} sessions ({answer.get('commands', 0)} commands, "
        f"{answer.get('links', 0)} chain links, {answer.get('unchained', 0)} records "
        "from before the chain)"
        + (": " + ", ".join(_esc(s) for s in sessions) if sessions else "")
    )
    print(
        f"{verb} {len(answer.get('casts') or [])} recording files and "
        f"{len(answer.get('quarantine') or [])} quarantined files"
    )
    held = answer.get("held") or []
    if held:
        print(f"kept on legal hold: {', '.join(_esc(h) for h in held)}")
    if answer.get("dry_run") and answer.get("more"):
        print("(more in later rounds)")


# -- holds -------------------------------------------------------------------


def _target(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if bool(args.session) == bool(args.tag):
        raise AdminError("name a session or a --tag (one of the two)")
    value = args.session or args.tag
    if not value.isprintable() or len(value) > 200:
        raise AdminError(f"not a session id or tag: {ascii(value)}")
    return (args.session, None) if args.session else (None, args.tag)


def hold(args: argparse.Namespace) -> int:
    config = _config(args)
    check_data_dir(config.data_dir)
    if args.session is None and args.tag is None:
        for h in read_holds(config.data_dir):
            print("\t".join(_esc(v) for v in (h.name, h.at, h.by, h.reason)))
        return ExitStatus.SUCCESS
    session, tag = _target(args)
    with holds_locked(config.data_dir, exclusive=True):
        holds = read_holds(config.data_dir)
        new = Hold(session, tag, args.reason or "", requester(), iso(time.time()))
        if any(h.session == session and h.tag == tag for h in holds):
            print(f"{_esc(new.name)} is already on hold")
            return ExitStatus.SUCCESS
        write_holds(config.data_dir, (*holds, new))
    known = set(_session_names(config.data_dir))
    if (session or tag) not in known:
        print(
            f"{PROG}: note: no {_esc(new.name)} in the store yet; held anyway",
            file=sys.stderr,
        )
    print(f"{_esc(new.name)} is on hold: retention and prune keep it")
    return ExitStatus.SUCCESS


def unhold(args: argparse.Namespace) -> int:
    config = _config(args)
    check_data_dir(config.data_dir)
    session, tag = _target(args)
    with holds_locked(config.data_dir, exclusive=True):
        holds = read_holds(config.data_dir)
        kept = tuple(h for h in holds if not (h.session == session and h.tag == tag))
        if len(kept) == len(holds):
            raise AdminError(
                f"no hold on {'session ' + session if session else 'tag ' + str(tag)}"
            )
        write_holds(config.data_dir, kept)
    print("hold removed")
    return ExitStatus.SUCCESS


def _session_names(data_dir: Path) -> Iterator[str]:
    for session in load(data_dir).sessions.values():
        yield session.id
        yield session.tag
