"""Sessions and commands: the records the store keeps, and their documents.

This is the one place where TinyDB documents are built from records and read
back, and the one place where a session's state changes: `Session` is frozen,
and each of its transitions (a command counted, a gap, the end, a link to its
connection record) is a method returning the next state. Times are epoch
seconds in the records and UTC ISO 8601 with a `Z` in the documents, so that
exports sort and compare as text.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from agent import AgentError
from agent.chain import CHAIN_KEY
from parsers.events import Checkpoint
from tracer.session_log import SessionStart
from tracer.tags import parse_ssh_argv


class SessionStatus(enum.StrEnum):
    LIVE = "live"
    CLOSED = "closed"
    TERMINATED = "terminated"  # ended by the agent (strict mode)
    # A connection audit-shell recorded before its ssh started
    # (agent/daemon/intents.py): pending until the traced ssh appears,
    # not-started if it does not in time.
    PENDING = "pending"
    NOT_STARTED = "not-started"
    # Coverage (agent/daemon/coverage.py): an ssh client that was on the
    # bastion but not traced, on record so that gaps show: without a tag, or
    # with a tag that was refused (end_reason says why).
    UNTAGGED = "untagged"
    REFUSED = "refused"


# What an end line may say a session ended as.
END_STATUSES = frozenset({SessionStatus.CLOSED, SessionStatus.TERMINATED})
# Coverage records: an ssh that was on the bastion, not traced.
NOT_TRACED = frozenset({SessionStatus.UNTAGGED, SessionStatus.REFUSED})
# Nothing more will happen to these: the end statuses, and coverage records.
ENDED = END_STATUSES | NOT_TRACED


class Kind(enum.StrEnum):
    """What a command record is (Command.kind)."""

    COMMAND = "command"  # a line the session's shell ran
    TRANSFER = "transfer"  # a file moved through the bastion (Command.transfer)
    # A command rule acted (Command.action: rule, action, outcome, detail).
    ACTION = "action"
    DENIED = "denied"  # a line a deny rule kept from running (Command.action)
    # parsers.events.LineKind: a line another program read (Command.program),
    # keys typed unseen at a shell prompt (Command.keys).
    INPUT = "input"
    HIDDEN_INPUT = "hidden_input"


class Origin(enum.StrEnum):
    """How a session came in (Session.origin); None: a tagged ssh started directly."""

    AUDIT_SHELL = "audit-shell"  # audit-shell's host menu
    WEB_TOKEN = "web-token"  # a token of audit-web's redeemed in the web terminal


class RecordError(AgentError):
    """A document or log line that does not describe a valid record."""


def shallow_dict(record: Any) -> dict[str, Any]:
    """A dataclass of plain fields as a dict, as dataclasses.asdict gives it
    for them (tuples stay tuples), without asdict's deep copy of every value:
    the writer does this for every session state it stores."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def iso(t: float) -> str:
    """Epoch seconds to `2026-11-28T10:53:00.123Z`."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError) as e:
        raise RecordError(f"not an ISO 8601 time: {text!r}") from e


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # the tag, or tag~N when the tag was used before
    tag: str
    bastion_user: str
    remote_user: str | None
    host: str | None
    port: int | None
    ssh_pid: int
    tty: str
    started_at: float
    ended_at: float | None = None
    status: SessionStatus = SessionStatus.LIVE
    end_reason: str | None = None
    command_count: int = 0
    gaps: tuple[tuple[float, float | None], ...] = ()
    remote_command: str | None = None
    # A coverage record's command line, as ssh was started (shlex-quoted).
    argv: str | None = None
    # From audit-shell's connection record (agent/intent_file.py), else None.
    origin: Origin | None = None
    client_addr: str | None = None
    inventory_host: str | None = None
    remote_account: str | None = None
    # "strace" or "paramiko" (tracer/session_log.py); None before a log exists.
    recorder: str | None = None
    # Private to the agent: which log feeds the session and where to resume,
    # for a web-token connection the account whose ssh it waits for, and for
    # a connection record the secret its paramiko recording carries.
    log: str = ""
    start_ticks: int = 0
    checkpoint: Checkpoint | None = None
    runner: str = ""
    proof: str = ""
    # The fleet's bastion id, for a session read from the fleet store
    # (agent/fleet_reader.py); None in the local store, which is one bastion's.
    bastion: str | None = None
    # Keys typed that became no command, input or secret (parsers/keys.py):
    # how many, from when to when; None while there were none.
    unparsed_input: tuple[int, float, float] | None = None

    @classmethod
    def new(cls, session_id: str, start: SessionStart, log: str) -> Session:
        ssh = parse_ssh_argv(start.argv, start.ssh_version)
        return cls(
            id=session_id,
            tag=start.tag,
            bastion_user=start.user,
            # ssh's default is the local user; ssh_config User lines are not read.
            remote_user=ssh.remote_user or start.user,
            host=ssh.host,
            port=ssh.port or 22,
            ssh_pid=start.ssh_pid,
            tty=start.tty,
            started_at=start.started_at,
            remote_command=" ".join(ssh.command) or None,
            recorder=start.recorder,
            log=log,
            start_ticks=start.start_ticks,
        )

    @property
    def identity(self) -> tuple[int, int]:
        return self.ssh_pid, self.start_ticks

    # -- transitions: the only ways a session's state changes ------------

    def counted(self, checkpoint: Checkpoint | None = None) -> Session:
        """One more command stored; `checkpoint`: where its log resumes after it."""
        return dataclasses.replace(
            self,
            command_count=self.command_count + 1,
            checkpoint=checkpoint if checkpoint is not None else self.checkpoint,
        )

    def with_gap(self, start: float, end: float | None) -> Session:
        """The session with the gap from `start` open (end None) or closed.

        Idempotent: re-reading a log after a restart meets the same gap again,
        with its times as exact as the log has them, while the store kept them
        to the millisecond; so gaps compare as the store writes them.
        """

        def key(t: float | None) -> str | None:
            return iso(t) if t is not None else None

        gaps = [g for g in self.gaps if (key(g[0]), g[1]) != (key(start), None)]
        if all((key(a), key(b)) != (key(start), key(end)) for a, b in gaps):
            gaps.append((start, end))
        return dataclasses.replace(self, gaps=tuple(gaps))

    def unparsed(self, keys: int, first: float, last: float) -> Session:
        """`keys` more keys typed that the parser could not place."""
        if keys <= 0:
            return self
        if self.unparsed_input is not None:
            before, start, end = self.unparsed_input
            keys, first, last = before + keys, min(start, first), max(end, last)
        return dataclasses.replace(self, unparsed_input=(keys, first, last))

    def ended(
        self, at: float, reason: str, status: SessionStatus = SessionStatus.CLOSED
    ) -> Session:
        """Over: closed, or terminated by the agent; the reason says why."""
        if status not in ENDED:
            raise ValueError(f"not an end status: {status}")
        return dataclasses.replace(self, status=status, ended_at=at, end_reason=reason)

    def never_started(self) -> Session:
        """A connection record whose traced ssh did not appear in time."""
        if self.status != SessionStatus.PENDING:
            return self
        return dataclasses.replace(self, status=SessionStatus.NOT_STARTED)

    def linked_to(self, record: Session) -> Session:
        """This session (from a log) as the one its connection record announced.

        The record's id and bastion user win (the web user, for a web token),
        with what it knew of where the person came from and asked to go.
        """
        return dataclasses.replace(
            self,
            id=record.id,
            bastion_user=record.bastion_user,
            origin=record.origin,
            client_addr=record.client_addr,
            inventory_host=record.inventory_host,
            remote_account=record.remote_account,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tag": self.tag,
            "bastion_user": self.bastion_user,
            "remote_user": self.remote_user,
            "host": self.host,
            "port": self.port,
            "ssh_pid": self.ssh_pid,
            "tty": self.tty,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at) if self.ended_at is not None else None,
            "status": self.status,
            "end_reason": self.end_reason,
            "command_count": self.command_count,
            "gaps": [[iso(a), iso(b) if b is not None else None] for a, b in self.gaps],
            "remote_command": self.remote_command,
            "origin": self.origin,
            "client_addr": self.client_addr,
            "inventory_host": self.inventory_host,
            "remote_account": self.remote_account,
            "recorder": self.recorder,
            "unparsed_input": (
                {
                    "keys": self.unparsed_input[0],
                    "from": iso(self.unparsed_input[1]),
                    "to": iso(self.unparsed_input[2]),
                }
                if self.unparsed_input is not None
                else None
            ),
            **({"bastion": self.bastion} if self.bastion is not None else {}),
            **({"argv": self.argv} if self.argv is not None else {}),
            "_ingest": {
                "log": self.log,
                "start_ticks": self.start_ticks,
                "runner": self.runner,
                "proof": self.proof,
                "checkpoint": (
                    shallow_dict(self.checkpoint) if self.checkpoint else None
                ),
            },
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Session:
        try:
            ingest = doc.get("_ingest") or {}
            cp = ingest.get("checkpoint")
            ended = doc.get("ended_at")
            unparsed = doc.get("unparsed_input")
            return cls(
                id=str(doc["id"]),
                tag=str(doc["tag"]),
                bastion_user=str(doc["bastion_user"]),
                remote_user=doc.get("remote_user"),
                host=doc.get("host"),
                port=doc.get("port"),
                ssh_pid=int(doc["ssh_pid"]),
                tty=str(doc.get("tty") or ""),
                started_at=parse_iso(doc["started_at"]),
                ended_at=parse_iso(ended) if ended else None,
                status=SessionStatus(doc.get("status") or SessionStatus.LIVE),
                end_reason=doc.get("end_reason"),
                command_count=int(doc.get("command_count") or 0),
                gaps=tuple(
                    (parse_iso(a), parse_iso(b) if b else None)
                    for a, b in doc.get("gaps") or ()
                ),
                remote_command=doc.get("remote_command"),
                argv=doc.get("argv"),
                origin=Origin(doc["origin"]) if doc.get("origin") else None,
                client_addr=doc.get("client_addr"),
                inventory_host=doc.get("inventory_host"),
                remote_account=doc.get("remote_account"),
                recorder=doc.get("recorder"),
                log=str(ingest.get("log") or ""),
                start_ticks=int(ingest.get("start_ticks") or 0),
                checkpoint=_checkpoint(cp) if cp else None,
                runner=str(ingest.get("runner") or ""),
                proof=str(ingest.get("proof") or ""),
                bastion=doc.get("bastion"),
                unparsed_input=(
                    (
                        int(unparsed["keys"]),
                        parse_iso(unparsed["from"]),
                        parse_iso(unparsed["to"]),
                    )
                    if unparsed
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad session document: {e}") from e

    def public_fields(self) -> dict[str, Any]:
        """The document without the agent's private bookkeeping."""
        doc = self.to_document()
        del doc["_ingest"]
        return doc


class CommandDocument(TypedDict):
    """A command as the store keeps it; checked_command() vouches for it.

    The export reads a million of them: a plain one (these fields, nothing
    more) it encodes straight to text rather than building a Command for it.
    Any other field (kind, transfer, action, program ...) is as Command reads
    it, and such a document goes through Command.from_document().
    """

    session: str
    seq: int
    time: str
    command: str
    cancelled: NotRequired[bool]


# A plain command document's fields, `cancelled` and the chain's link not
# counted: the agent links every document (agent/chain.py), and a linked one
# that took the slow path made a chained store's export 3.3 times slower.
PLAIN_FIELDS = 4


def checked_command(doc: Any) -> CommandDocument:
    """`doc` if Command.from_document() takes it, else RecordError."""
    Command.from_document(doc)
    return doc  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Command:
    session: str  # Session.id
    seq: int  # 1, 2, 3 ... within the session
    time: str  # when the shell accepted the line, iso(); kept as text so that
    # reading a million of them back costs no date parsing
    command: str  # for a transfer: "upload PATH" or "download PATH"
    cancelled: bool = False  # entered over several lines, then given up (Ctrl-C)
    kind: Kind = Kind.COMMAND
    # A transfer's fields (README: file transfers): direction, path, name,
    # size, sha256, started_at, outcome, reason.
    transfer: Mapping[str, Any] | None = None
    # What a rule did (agent/rules.py): rule, action, outcome, detail, and the
    # seq of the record it acted on (None for a denied line, its own record).
    action: Mapping[str, Any] | None = None
    # README: What counts as a command. For an input, the command line that
    # started the program that read it; what was typed when bash ran its
    # expansion (or fc's edit); for hidden input, how many keys, never which.
    program: str | None = None
    typed: str | None = None
    keys: int | None = None
    unterminated: bool = False  # still open when the parser's cap released it

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "session": self.session,
            "seq": self.seq,
            "time": self.time,
            "command": self.command,
        }
        if self.cancelled:
            doc["cancelled"] = True
        if self.kind != Kind.COMMAND:
            doc["kind"] = self.kind.value
        if self.transfer is not None:
            doc["transfer"] = dict(self.transfer)
        if self.action is not None:
            doc["action"] = dict(self.action)
        if self.program is not None:
            doc["program"] = self.program
        if self.typed is not None:
            doc["typed"] = self.typed
        if self.keys is not None:
            doc["keys"] = self.keys
        if self.unterminated:
            doc["unterminated"] = True
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Command:
        # Checked, not converted: this runs once per command on every export.
        try:
            session, seq, time, command = (
                doc["session"],
                doc["seq"],
                doc["time"],
                doc["command"],
            )
        except (KeyError, TypeError) as e:
            raise RecordError(f"bad command document: missing {e}") from e
        if type(seq) is not int or not (
            type(session) is str and type(time) is str and type(command) is str
        ):
            raise RecordError(f"bad command document: wrong types in {doc!r:.200}")
        kind, transfer = doc.get("kind"), doc.get("transfer")
        if (
            kind is None
            and len(doc) - ("cancelled" in doc) - (CHAIN_KEY in doc) == PLAIN_FIELDS
        ):
            # The common case: a command with nothing more to it.
            return cls(session, seq, time, command, doc.get("cancelled") is True)
        try:
            kind = Kind(kind or Kind.COMMAND)
        except ValueError as e:
            raise RecordError(f"bad command document: kind {kind!r:.40}") from e
        if transfer is not None and not isinstance(transfer, dict):
            raise RecordError(f"bad command document: transfer {transfer!r:.80}")
        action = doc.get("action")
        if action is not None and not isinstance(action, dict):
            raise RecordError(f"bad command document: action {action!r:.80}")
        program, typed, keys = doc.get("program"), doc.get("typed"), doc.get("keys")
        if not (
            (program is None or type(program) is str)
            and (typed is None or type(typed) is str)
            and (keys is None or type(keys) is int)
        ):
            raise RecordError(f"bad command document: wrong types in {doc!r:.200}")
        return cls(
            session,
            seq,
            time,
            command,
            doc.get("cancelled") is True,
            kind,
            transfer,
            action,
            program,
            typed,
            keys,
            doc.get("unterminated") is True,
        )


def _checkpoint(fields: Mapping[str, Any]) -> Checkpoint:
    """A stored checkpoint; lists from JSON back to the tuples it holds."""
    known = {f.name for f in dataclasses.fields(Checkpoint)}
    values = {k: v for k, v in fields.items() if k in known}
    if "shell_prompts" in values:
        values["shell_prompts"] = tuple(values["shell_prompts"] or ())
    return Checkpoint(**values)
