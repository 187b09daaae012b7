"""A new log's session: stored before its first command, linked to its record.

audit-shell writes its connection record before it starts ssh; the caller
stores the records first, so that the record keeps the tag's id and this
session does not take it. Ingest thread only.
"""

from __future__ import annotations

import logging

from agent.daemon.intents import IntentLinker
from agent.daemon.store import Store
from agent.records import Command, Session, iso
from tracer.session_log import SessionStart

log = logging.getLogger(__name__)


def new_session(
    store: Store, intents: IntentLinker | None, start: SessionStart, log_name: str
) -> Session:
    """The session of the log `log_name`, submitted to the store."""
    session = Session.new(store.new_session_id(start.tag), start, log_name)
    if intents is not None:
        session = intents.link(start, session)
    commands: list[Command] = []
    remote_command = session.remote_command
    if remote_command:
        # `ssh host cmd`: argv says what runs; the shell never shows it.
        session = session.counted()
        commands.append(Command(session.id, 1, iso(start.started_at), remote_command))
    store.submit(session, commands)
    log.info(
        "session %s: %s -> %s@%s:%s on %s",
        session.id,
        session.bastion_user,
        session.remote_user,
        session.host,
        session.port,
        session.tty,
    )
    return session
