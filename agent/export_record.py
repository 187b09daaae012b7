"""The export record: one command with its session's fields, as every output has it.

audit-export writes it as JSON, JSON Lines or CSV; the fleet events carry it;
its fields are documented in the README and schema/export-record.schema.json.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from agent.records import Command, CommandDocument, Kind, Session

# The order of the fields in a record, and of the columns in CSV.
FIELDS = (
    "session",
    "seq",
    "time",
    "command",
    "cancelled",
    "kind",
    "transfer",
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
COMMAND_FIELDS = 7  # the first seven come from the command, the rest its session
FLEET_FIELDS = (*FIELDS, "bastion")  # read from the fleet store
_V = TypeVar("_V")


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
    }
    if session is not None:
        record.update(session_fields(session))
    return record


class JsonRecords:
    """flat_record() as JSON text, fast enough for a million records.

    The session's fields are encoded once per session and the command's own
    by hand; the text is exactly what json.dumps(flat_record(...),
    ensure_ascii=False) gives, at a third of the cost.
    """

    def __init__(self) -> None:
        self._tails: dict[str, str] = {}
        self._by_id: _ByKey[tuple[str, str]] | None = None

    def text(self, command: Command, session: Session | None) -> str:
        tail = "}"
        if session is not None:
            tail = self._tails.get(_key(session)) or self._tail(session)
        transfer = "null"
        if command.transfer is not None:
            transfer = _ENCODER.encode(dict(command.transfer))
        return (
            f'{{"session": {_string(command.session)}, "seq": {command.seq}, '
            f'"time": {_string(command.time)}, "command": {_string(command.command)}, '
            f'"cancelled": {"true" if command.cancelled else "false"}, '
            f'"kind": "{command.kind.value}", "transfer": {transfer}{tail}'
        )

    def documents(
        self, docs: list[CommandDocument], sessions: Mapping[str, Session]
    ) -> list[str]:
        """The text of each stored command, its session from `sessions` (local).

        The same text as text() gives, from the documents as stored: one
        comprehension per batch, each session's head and tail looked up by
        id. This is the export's inner loop.
        """
        enc, parts = _string, self._parts(sessions)
        return [
            f'{(p := parts[d["session"]])[0]}{d["seq"]}, "time": {enc(d["time"])}, '
            f'"command": {enc(d["command"])}, "cancelled": '
            f"{'true' if d.get('cancelled') is True else 'false'}, "
            f'"kind": "{d.get("kind", _COMMAND)}", "transfer": '
            f"{'null' if (t := d.get('transfer')) is None else _ENCODER.encode(t)}"
            f"{p[1]}"
            for d in docs
        ]

    def _parts(self, sessions: Mapping[str, Session]) -> _ByKey[tuple[str, str]]:
        """Per session id: the text before the seq, the text after `transfer`."""

        def parts(sid: str) -> tuple[str, str]:
            session = sessions.get(sid)
            tail = "}" if session is None else self._tail(session)
            return f'{{"session": {_string(sid)}, "seq": ', tail

        if self._by_id is None or self._by_id.sessions is not sessions:
            self._by_id = _ByKey(parts, sessions)
        return self._by_id

    def _tail(self, session: Session) -> str:
        tail = self._tails[_key(session)] = (
            ", " + _ENCODER.encode(session_fields(session))[1:]
        )
        return tail


class CsvRecords:
    """flat_record() as RFC 4180 CSV rows, as csv.writer writes them (local).

    The session's cells are encoded once per session (by the csv module); a
    command's own cells are quoted by csv's QUOTE_MINIMAL rule, by hand.
    """

    def __init__(self) -> None:
        self._by_id: _ByKey[str] | None = None

    def header(self) -> str:
        return _csv_row(FIELDS)

    def documents(
        self, docs: list[CommandDocument], sessions: Mapping[str, Session]
    ) -> list[str]:
        """The row of each stored command, its session from `sessions`."""
        cell = _csv_cell
        if self._by_id is None or self._by_id.sessions is not sessions:
            self._by_id = _ByKey(lambda sid: self._tail(sessions.get(sid)), sessions)
        tails = self._by_id
        return [
            f"{cell(d['session'])},{d['seq']},{cell(d['time'])},"
            f"{cell(d['command'])},{'true' if d.get('cancelled') is True else 'false'},"
            f"{d.get('kind', _COMMAND)},"
            f"{'' if (t := d.get('transfer')) is None else cell(compact_json(t))}"
            f"{tails[d['session']]}"
            for d in docs
        ]

    @staticmethod
    def _tail(session: Session | None) -> str:
        names = FIELDS[COMMAND_FIELDS:]
        if session is None:
            return "," + _csv_row(("",) * len(names))
        fields = session_fields(session)  # by name: FIELDS sets the order
        values = (fields.get(name) for name in names)
        return "," + _csv_row(tuple("" if v is None else v for v in values))


def compact_json(fields: Any) -> str:
    """A transfer's fields as one CSV cell holds them."""
    return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":"))


def _csv_row(values: tuple[Any, ...]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


# csv's QUOTE_MINIMAL (excel dialect): quote a cell holding the delimiter, the
# quote character or a character of the line terminator ("\r\n").
_CSV_SPECIAL = re.compile('[,"\r\n]')


def _csv_cell(text: str) -> str:
    if _CSV_SPECIAL.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


class _ByKey(dict[str, _V]):
    """A cache filled by `make(key)` on a miss: one C-level lookup per hit."""

    def __init__(
        self, make: Callable[[str], _V], sessions: Mapping[str, Session]
    ) -> None:
        super().__init__()
        self.make = make
        self.sessions = sessions  # the sessions the values were made from

    def __missing__(self, key: str) -> _V:
        value = self[key] = self.make(key)
        return value


def _key(session: Session) -> str:
    return f"{session.bastion}/{session.id}" if session.bastion else session.id


_ENCODER = json.JSONEncoder(ensure_ascii=False)
_string = json.encoder.encode_basestring
_COMMAND = Kind.COMMAND.value
