"""The export record: one command with its session's fields, as every output has it.

audit-export writes it as JSON, JSON Lines or CSV; the fleet events carry it;
its fields are documented in the README and schema/export-record.schema.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent.config import Config, rules_of
from agent.escape import json_dumps, json_string, json_text
from agent.highlight import Matcher, Risk
from agent.records import Command, Session
from agent.rules import RuleSet

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
    "bastion",
    "risk",
)
COMMAND_FIELDS = 12  # the first twelve come from the command, then its session's...
OWN_FIELDS = 2  # ...and last the bastion's name and the rules the command matched


class Stamp:
    """What every record adds of its own: the bastion's name and the risk rules.

    The bastion is this one's (agent.toml's bastion), unless the session was
    read from the fleet store, which names the bastion it ran on.
    """

    def __init__(self, bastion: str, rules: Sequence[Matcher]) -> None:
        self.bastion = bastion
        self.risk = Risk(rules).names

    @classmethod
    def of(cls, config: Config, rules: RuleSet | None = None) -> Stamp:
        """The highlight rules: the rules file's, agent.toml's, the built-in ones."""
        rules = rules_of(config) if rules is None else rules
        return cls(config.bastion_name, rules.highlighters())

    def bastion_of(self, session: Session | None) -> str:
        return (
            session.bastion if session is not None and session.bastion else self.bastion
        )


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
    }


def flat_record(
    command: Command, session: Session | None, stamp: Stamp
) -> dict[str, Any]:
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
    record["bastion"] = stamp.bastion_of(session)
    record["risk"] = list(stamp.risk(command.command))
    return record


class JsonRecords:
    """flat_record() as JSON text, fast enough for a million records.

    The session's fields and the bastion are encoded once per session and the
    command's own by hand; the text is exactly what escape.json_dumps(
    flat_record(...)) gives, at a third of the cost.
    """

    def __init__(self, stamp: Stamp) -> None:
        self._tails: dict[str, str] = {}
        self._stamp = stamp
        self._risk = stamp.risk
        self._lone = f', "bastion": {json_string(stamp.bastion)}, "risk": '

    def text(self, command: Command, session: Session | None) -> str:
        tail = self._lone
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
        risk = self._risk(command.command)
        text = _plain(command.command)  # what the user typed: no raw control
        if not text.isascii() or "\x7f" in text:
            text = json_text(text)
        return (
            f'{{"session": {_plain(command.session)}, "seq": {command.seq}, '
            f'"time": {_plain(command.time)}, "command": {text}, '
            f'"cancelled": {"true" if command.cancelled else "false"}, '
            f'"kind": "{command.kind.value}", "transfer": {transfer}, '
            f'"action": {action}{extras}{tail}'
            f"{json_dumps(list(risk)) if risk else '[]'}}}"
        )

    def _tail(self, session: Session) -> str:
        bastion = json_string(self._stamp.bastion_of(session))
        tail = self._tails[_key(session)] = (
            ", "
            + json_dumps(session_fields(session))[1:-1]
            + f', "bastion": {bastion}, "risk": '
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
