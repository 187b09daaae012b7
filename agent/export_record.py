"""The export record: one command with its session's fields, as every output has it.

audit-export writes it as JSON, JSON Lines or CSV; the fleet events carry it;
its fields are documented in the README and schema/export-record.schema.json.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from agent.chain import CHAIN_KEY
from agent.config import Config, rules_of
from agent.escape import FORMULA_START, csv_cell, json_dumps, json_string, json_text
from agent.highlight import Matcher, Risk
from agent.records import PLAIN_FIELDS, Command, CommandDocument, Session
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
_V = TypeVar("_V")
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
        self._by_id: _ByKey[tuple[str, str]] | None = None

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

    def documents(
        self, docs: list[CommandDocument], sessions: Mapping[str, Session]
    ) -> list[str]:
        """The text of each stored command, its session from `sessions` (local).

        The same text as text() gives, from the documents as stored: one
        comprehension per batch, each session's head and tail looked up by
        id. This is the export's inner loop; a document with more than the
        plain fields (a transfer, an input, an action ...) goes through text().
        """
        # The time is an iso() time (ASCII, no control); the command is what
        # the user typed: json_string escapes every control in it.
        plain, enc = _plain, json_string
        parts, risk, text = self._parts(sessions), self._risk, self.text
        return [
            f'{(p := parts[d["session"]])[0]}{d["seq"]}, "time": {plain(d["time"])}, '
            f'"command": {enc(c := d["command"])}, "cancelled": '
            f"{'true' if d.get('cancelled') is True else 'false'}{p[1]}"
            f"{json_dumps(list(r)) if (r := risk(c)) else '[]'}}}"
            if len(d) - ("cancelled" in d) - (CHAIN_KEY in d) == PLAIN_FIELDS
            else text(Command.from_document(d), sessions.get(d["session"]))
            for d in docs
        ]

    def _parts(self, sessions: Mapping[str, Session]) -> _ByKey[tuple[str, str]]:
        """Per session id: the text before the seq, the text after `cancelled`."""

        def parts(sid: str) -> tuple[str, str]:
            session = sessions.get(sid)
            tail = self._lone if session is None else self._tail(session)
            return f'{{"session": {json_string(sid)}, "seq": ', _PLAIN_COMMAND + tail

        if self._by_id is None or self._by_id.sessions is not sessions:
            self._by_id = _ByKey(parts, sessions)
        return self._by_id

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
# A plain stored command (session, seq, time, command and maybe cancelled):
# what its record says after `cancelled`, before its session's fields.
_PLAIN_COMMAND = ', "kind": "command", "transfer": null, "action": null' + _PLAIN


class CsvRecords:
    """flat_record() as RFC 4180 CSV rows, as csv.writer writes them.

    The session's cells are encoded once per session (by the csv module); a
    plain stored command's own cells are quoted by csv's QUOTE_MINIMAL rule,
    by hand (documents(), the local store); values() are a row's cells, for
    csv.writer (the fleet's rows, and stored commands that are not plain).
    """

    def __init__(self, stamp: Stamp) -> None:
        self._stamp = stamp
        self._risk = stamp.risk
        session_names = FIELDS[COMMAND_FIELDS:-OWN_FIELDS]
        self._session_names = session_names
        self._cells: dict[tuple[str | None, str] | None, tuple[Any, ...]] = {
            None: ("",) * len(session_names) + (stamp.bastion,)
        }
        self._by_id: _ByKey[str] | None = None

    def header(self) -> str:
        return _csv_row(FIELDS)

    def values(self, command: Command, session: Session | None) -> tuple[Any, ...]:
        """The cells of one record; `risk` is the rules' names, spaced."""
        sid = (session.bastion, session.id) if session is not None else None
        tail = self._cells.get(sid)
        if tail is None:
            assert session is not None
            named = session_fields(session)  # by name: FIELDS sets the order
            cells = (named.get(name) for name in self._session_names)
            tail = self._cells[sid] = tuple(_cell(v) for v in cells) + (
                _cell(self._stamp.bastion_of(session)),
            )
        return (
            (
                command.session,
                command.seq,
                command.time,
                _text(command.command),  # what a user typed: controls, formulas
                "true" if command.cancelled else "false",
                command.kind.value,
                "" if command.transfer is None else compact_json(command.transfer),
                "" if command.action is None else compact_json(command.action),
                _cell(command.program),
                _cell(command.typed),  # what the user typed, too
                _cell(command.keys),
                "true" if command.unterminated else "false",
            )
            + tail
            + (" ".join(self._risk(command.command)),)
        )

    def documents(
        self, docs: list[CommandDocument], sessions: Mapping[str, Session]
    ) -> list[str]:
        """The row of each stored command, its session from `sessions`."""
        cell, text, risk, values = _quoted, _text, self._risk, self.values
        if self._by_id is None or self._by_id.sessions is not sessions:
            self._by_id = _ByKey(lambda sid: self._tail(sessions.get(sid)), sessions)
        tails = self._by_id
        return [
            f"{cell(d['session'])},{d['seq']},{cell(d['time'])},"
            f"{cell(text(c := d['command']))},"
            f"{'true' if d.get('cancelled') is True else 'false'},command,,,,,,false"
            f"{tails[d['session']]},{cell(' '.join(risk(c)))}\r\n"
            if len(d) - ("cancelled" in d) - (CHAIN_KEY in d) == PLAIN_FIELDS
            else _csv_row(values(Command.from_document(d), sessions.get(d["session"])))
            for d in docs
        ]

    def _tail(self, session: Session | None) -> str:
        """The session's cells and the bastion's, each after a comma."""
        if session is None:
            cells: tuple[Any, ...] = ("",) * len(self._session_names)
            bastion = self._stamp.bastion
        else:
            fields = session_fields(session)
            cells = tuple(_cell(fields.get(name)) for name in self._session_names)
            bastion = _cell(self._stamp.bastion_of(session))
        return "," + _csv_row((*cells, bastion))[: -len(_CSV_EOL)]


def compact_json(fields: Any) -> str:
    """A transfer's or an action's fields (file names: a user's) as one cell."""
    return json_dumps(dict(fields), separators=(",", ":"))


def _cell(value: Any) -> Any:
    """A cell of text a user may have chosen: escape.csv_cell; None empty."""
    if value is None:
        return ""
    return csv_cell(value) if isinstance(value, str) else value


def _text(text: str) -> str:
    """A command's cell: most are printable and start with no formula sign."""
    if not text.isprintable() or text[:1] in FORMULA_START:
        return csv_cell(text)
    return text


_CSV_EOL = "\r\n"  # the excel dialect's line terminator


def _csv_row(values: tuple[Any, ...]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


# csv's QUOTE_MINIMAL (excel dialect): quote a cell holding the delimiter, the
# quote character or a character of the line terminator ("\r\n").
_CSV_SPECIAL = re.compile('[,"\r\n]')


def _quoted(text: str) -> str:
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


# A session id (a checked tag) and an iso() time are ASCII without controls.
_plain = json.encoder.encode_basestring
