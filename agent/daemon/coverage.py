"""Coverage: every ssh client on the bastion is on record, traced or not.

Discovery reports ssh clients without a tag and with a tag it refused
(tracer/discovery.py `Seen`). Unless `trace_untagged` has them traced under
a tag of their own, each becomes one session record here, status
`untagged` or `refused`: who started it, where it went, when, its command
line (shell-quoted; every output escapes it), and for a refusal why. So an
auditor can show from the store what was not audited
(`audit-sessions --status untagged,refused`). Main thread only.
"""

from __future__ import annotations

import logging
import shlex
import time

from agent.daemon.store import Store
from agent.intent_file import user_name
from agent.records import Session, SessionStatus
from tracer.discovery import Seen, TaggedSsh
from tracer.procfs import read_boot_time, started_at
from tracer.tags import parse_ssh_argv

log = logging.getLogger(__name__)

ARGV_MAX_CHARS = 4096  # kept of a command line on record
# A coverage record's log: none. Never a log's name (those end in .strace or
# .chunks), so a log of the same process (an untagged ssh that execs a tagged
# one keeps its pid and start time) gets a session of its own, not this one.
NO_LOG = "(not traced)"


class Coverage:
    """Puts the ssh clients that are not traced on record, each once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.boot_time = read_boot_time()
        self.recorded = 0

    def seen(self, ssh: TaggedSsh) -> None:
        if self.store.processes.claims(ssh.identity):
            return  # on record before (this agent, or the last one)
        args = [a.decode("utf-8", "replace") for a in ssh.argv.split(b"\0") if a]
        parsed = parse_ssh_argv(args, ssh.ssh_version)
        user = user_name(ssh.uid)
        now = time.time()
        status = (
            SessionStatus.REFUSED
            if ssh.seen == Seen.REFUSED
            else SessionStatus.UNTAGGED
        )
        session = Session(
            id=self.store.new_session_id(ssh.tag),
            tag=ssh.tag,
            bastion_user=user,
            remote_user=parsed.remote_user or user,
            host=parsed.host,
            port=parsed.port or 22,
            ssh_pid=ssh.pid,
            tty="",
            started_at=started_at(ssh.start_ticks, self.boot_time),
            ended_at=now,
            status=status,
            end_reason=ssh.reason or "no session tag: not traced",
            remote_command=" ".join(parsed.command) or None,
            argv=shlex.join(args)[:ARGV_MAX_CHARS],
            start_ticks=ssh.start_ticks,
            log=NO_LOG,
        )
        self.store.submit(session)
        self.recorded += 1
        log.info(
            "ssh %d of %s to %s, %s: on record as %s",
            ssh.pid,
            user,
            ascii(parsed.host or "?"),
            status,
            session.id,
        )
