"""The export record: one command with its session's fields, as every output has it.

audit-export writes it as JSON, JSON Lines or CSV; the fleet events carry it;
its fields are documented in the README and schema/export-record.schema.json.
"""

from __future__ import annotations

import json
from typing import Any

from agent.escape import json_dumps, json_text
from agent.records import Command, Session

# The order of the fields in a record, and of the columns in CSV.
FIELDS = (
    "session",
    "seq",
    "time",
    "command",
    "cancelled",
    "kind",
    "transfer",
    "action",
    "program",
    "typed",
    "keys",
    "unterminated",
    "tag",
    "bastion_user",
    "remote_user",
    "host",
    "port",
    "ssh_pid",
    "tty",
    "session_started_at",
    "session_ended_at",
    "session_status",
    "origin",
    "client_addr",
    "inventory_host",
    "remote_account",
    "recorder",
)
COMMAND_FIELDS = 12  # the first twelve come from the command, the rest its session
FLEET_FIELDS = (*FIELDS, "bastion")  # read from the fleet store


def session_fields(session: Session) -> dict[str, Any]:
    """The fields every exported command carries from its session."""
    public = session.public_fields()
    return {
        "tag": session.tag,
        "bastion_user": session.bastion_user,
        "remote_user": session.remote_user,
        "host": session.host,
        "port": session.port,
        "ssh_pid": session.ssh_pid,
        "tty": session.tty,
        "session_started_at": public["started_at"],
        "session_ended_at": public["ended_at"],
        "session_status": session.status,
        # From the connection record (agent/intent_file.py): audit-shell or
        # web-token; null for a tagged ssh started directly.
        "origin": session.origin,
        "client_addr": session.client_addr,
        "inventory_host": session.inventory_host,
        "remote_account": session.remote_account,
        # strace or paramiko; null for sessions stored before it was kept.
        "recorder": session.recorder,
        # Only from the fleet store: the bastion the session ran on.
        **({"bastion": session.bastion} if session.bastion is not None else {}),
    }


def flat_record(command: Command, session: Session | None) -> dict[str, Any]:
    """One exported command with its session's fields (README: export fields)."""
    record: dict[str, Any] = {
        "session": command.session,
        "seq": command.seq,
        "time": command.time,
        "command": command.command,
        "cancelled": command.cancelled,
        "kind": command.kind.value,
        "transfer": dict(command.transfer) if command.transfer is not None else None,
        "action": dict(command.action) if command.action is not None else None,
        "program": command.program,
        "typed": command.typed,
        "keys": command.keys,
        "unterminated": command.unterminated,
    }
    if session is not None:
        record.update(session_fields(session))
    return record


class JsonRecords:
    """flat_record() as JSON text, fast enough for a million records.

    The session's fields are encoded once per session and the command's own
    by hand; the text is exactly what escape.json_dumps(flat_record(...))
    gives, at a third of the cost.
    """

    def __init__(self) -> None:
        self._tails: dict[str, str] = {}

    def text(self, command: Command, session: Session | None) -> str:
        tail = "}"
        if session is not None:
            tail = self._tails.get(_key(session)) or self._tail(session)
        transfer = "null"
        if command.transfer is not None:  # file names: the user's choice too
            transfer = json_dumps(dict(command.transfer))
        action = "null"
        if command.action is not None:
            action = json_dumps(dict(command.action))
        if command.program is None and command.typed is None and command.keys is None:
            extras = _PLAIN_UNTERMINATED if command.unterminated else _PLAIN
        else:  # typed and keys are what the user typed: escaped
            extras = ", " + json_dumps(_line_fields(command))[1:-1]
        text = _plain(command.command)  # what the user typed: no raw control
        if not text.isascii() or "\x7f" in text:
            text = json_text(text)
        return (
            f'{{"session": {_plain(command.session)}, "seq": {command.seq}, '
            f'"time": {_plain(command.time)}, "command": {text}, '
            f'"cancelled": {"true" if command.cancelled else "false"}, '
            f'"kind": "{command.kind.value}", "transfer": {transfer}, '
            f'"action": {action}{extras}{tail}'
        )

    def _tail(self, session: Session) -> str:
        tail = self._tails[_key(session)] = (
            ", " + json_dumps(session_fields(session))[1:]
        )
        return tail


def _line_fields(command: Command) -> dict[str, Any]:
    """Who read the line and what else the parser knows of it (README)."""
    return {
        "program": command.program,
        "typed": command.typed,
        "keys": command.keys,
        "unterminated": command.unterminated,
    }


_PLAIN = ', "program": null, "typed": null, "keys": null, "unterminated": '
_PLAIN_UNTERMINATED = _PLAIN + "true"
_PLAIN += "false"


def _key(session: Session) -> str:
    return f"{session.bastion}/{session.id}" if session.bastion else session.id


# A session id (a checked tag) and an iso() time are ASCII without controls.
_plain = json.encoder.encode_basestring
