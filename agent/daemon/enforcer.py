"""The command rules acting on what the ingest finds (README: Command rules).

The ingest thread asks `judge` about each new record of a live session, as
soon as the parser has it (before the store's flush): the rules that match
act, and each action taken comes back as a `Taken` for the session's record
(agent/daemon/follower.py stores it right after the record it acted on).

- highlight: nothing here; readers show it (`risk`, audit-tail).
- alert: handed to the Alerter's thread (agent/daemon/alerts.py); its
  outcome, delivered or given up, becomes a record when it is known.
- warn: one line on the person's terminal, written now.
- cut: the session's end reason is set at once; the main loop (`run_pending`)
  ends the session's process as strict mode does: one line on its terminal,
  SIGTERM, SIGKILL half a second later (a traced ssh) or after 5 s
  (audit-shell's paramiko child, which ends its session itself on SIGTERM).
  The supervisor sees the ssh gone and ends its log, as after a verdict.
- lock: the bastion user's lock file (agent/locks.py), written now.
- deny: a traced ssh's line has been sent already; the record says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.daemon.alerts import Alert, Alerter
from agent.export_record import Stamp, flat_record
from agent.locks import Lock, write_lock
from agent.records import Command, Kind, Session, SessionStatus, iso, parse_iso
from agent.rules import DIRECT, Action, Rule, RuleSet, Subject
from tracer.discovery import is_alive
from tracer.terminals import notify_terminal

log = logging.getLogger(__name__)

KILL_GRACE_S = 0.5  # tracer/supervisor.py's, for strict mode
CHILD_GRACE_S = 5.0  # audit-shell's own STOP_GRACE_S for its child
ACTED = frozenset(set(Action) - {Action.HIGHLIGHT, Action.ALLOW})


@dataclass(frozen=True, slots=True)
class Taken:
    """One action carried out (or not): the fields of its record."""

    rule: str
    action: Action
    outcome: str  # done, failed, too-late
    detail: str
    command_seq: int | None

    def record(self, session: str, seq: int, time_: str) -> Command:
        return Command(
            session,
            seq,
            time_,
            f"{self.action.value} by rule {self.rule}: {self.outcome}",
            kind=Kind.ACTION,
            action={
                "rule": self.rule,
                "action": self.action.value,
                "outcome": self.outcome,
                "detail": self.detail or None,
                "command_seq": self.command_seq,
            },
        )


@dataclass(frozen=True, slots=True)
class _Cut:
    identity: tuple[int, int]
    paramiko: bool
    message: str


Later = Callable[[tuple[int, int], Taken], None]  # an alert's outcome, any thread
EndReason = Callable[[tuple[int, int], str | None], None]  # Ingest.cut


def subject_of(session: Session, command: Command) -> Subject:
    hosts = tuple(h for h in (session.host, session.inventory_host) if h)
    kind = Kind.COMMAND if command.kind == Kind.DENIED else command.kind
    return Subject(
        text=command.command,
        kind=kind.value,
        bastion_user=session.bastion_user,
        remote_user=session.remote_user or session.remote_account,
        hosts=hosts,
        origin=session.origin.value if session.origin else DIRECT,
        when=parse_iso(command.time),
    )


class Enforcer:
    """What the rules do: judged in the ingest thread, cuts in the main loop."""

    def __init__(
        self,
        rules: RuleSet,
        locks_dir: os.PathLike[str] | str,
        bastion: str,
        alerter: Alerter | None = None,
    ) -> None:
        self.rules = rules
        self.locks_dir = locks_dir
        self.bastion = bastion
        self.stamp = Stamp(bastion, rules.highlighters())  # the alerts' records
        self.alerter = alerter
        self._cuts: queue.SimpleQueue[_Cut] = queue.SimpleQueue()
        self._kills: dict[tuple[int, int], float] = {}  # paramiko children
        self.end_reason: EndReason = lambda identity, reason: None
        self.wake: Callable[[], None] | None = None  # the main loop's, if it sleeps
        self.counts: dict[str, int] = {a.value: 0 for a in ACTED}

    def judge(self, session: Session, command: Command) -> list[Taken]:
        """The ingest thread: act on one new record; what was done."""
        if session.status != SessionStatus.LIVE or command.kind == Kind.ACTION:
            return []
        matched = self.rules.match(subject_of(session, command))
        taken: list[Taken] = []
        done: set[Action] = set()
        for rule in matched:
            for action in rule.actions:
                if action not in ACTED or (action in done and action != Action.ALERT):
                    continue
                if action == Action.DENY and command.kind == Kind.DENIED:
                    continue  # audit-shell denied it; its record says so
                done.add(action)
                result = self._act(action, rule, session, command)
                if result is not None:
                    self.counts[action.value] += 1
                    taken.append(result)
        return taken

    def _act(
        self, action: Action, rule: Rule, session: Session, command: Command
    ) -> Taken | None:
        seq = command.seq
        log.warning(
            "session %s: record %d matched rule %s: %s",
            session.id,
            seq,
            rule.name,
            action.value,
        )
        if action == Action.ALERT:
            if self.alerter is not None:
                self.alerter.send(self._alert(rule, session, command))
            return None  # its record comes with its outcome
        if action == Action.WARN:
            line = rule.message or (
                f"bastion-audit: warning: this command matched rule {rule.name}"
            )
            shown = notify_terminal(session.ssh_pid, line, session.tty or None)
            return Taken(
                rule.name,
                action,
                "done" if shown else "failed",
                "shown on the terminal" if shown else "no terminal to write to",
                seq,
            )
        if action == Action.CUT:
            reason = f"cut by rule {rule.name}"
            self.end_reason(session.identity, reason)
            self._cuts.put(
                _Cut(
                    session.identity,
                    session.recorder == "paramiko",
                    f"bastion-audit: this session is ended by rule {rule.name}.",
                )
            )
            if self.wake is not None:
                self.wake()
            return Taken(rule.name, action, "done", "the session is being ended", seq)
        if action == Action.LOCK:
            return self._lock(rule, session, seq)
        return Taken(
            rule.name,
            action,
            "too-late",
            "the strace backend sees a line only once it was sent",
            seq,
        )

    def _lock(self, rule: Rule, session: Session, seq: int) -> Taken:
        now = time.time()
        until = now + rule.lock_for_s if rule.lock_for_s else None
        lock = Lock(session.bastion_user, rule.name, session.id, now, until)
        try:
            write_lock(self.locks_dir, lock)  # type: ignore[arg-type]
        except (OSError, ValueError) as e:
            log.error("cannot lock %s: %s", session.bastion_user, e)
            return Taken(rule.name, Action.LOCK, "failed", str(e)[:200], seq)
        return Taken(
            rule.name,
            Action.LOCK,
            "done",
            f"{session.bastion_user} " + lock.describe().removeprefix("locked by "),
            seq,
        )

    def _alert(self, rule: Rule, session: Session, command: Command) -> Alert:
        body = {
            "alert_id": f"{self.bastion}/{session.id}/{command.seq}/{rule.name}",
            "bastion": self.bastion,
            "time": iso(time.time()),
            "rule": rule.name,
            "actions": [a.value for a in rule.actions],
            "record": flat_record(command, session, self.stamp),
        }
        return Alert(session.identity, rule.name, command.seq, body)

    def alert_taken(self, alert: Alert, delivered: bool, detail: str) -> Taken:
        return Taken(
            alert.rule,
            Action.ALERT,
            "done" if delivered else "failed",
            detail[:500],
            alert.command_seq,
        )

    # -- the main loop -----------------------------------------------------

    @property
    def killing(self) -> bool:
        """Whether a SIGKILL is due soon (the main loop should not sleep long)."""
        return bool(self._kills)

    def run_pending(self) -> None:
        """Main thread, each round: the cuts ordered, the kills due."""
        while True:
            try:
                cut = self._cuts.get_nowait()
            except queue.Empty:
                break
            if not is_alive(cut.identity):
                continue
            notify_terminal(cut.identity[0], cut.message)
            _signal(cut.identity[0], signal.SIGTERM)
            # audit-shell's child ends its session and writes its end line
            # itself on SIGTERM: it gets the time its parent gives it.
            grace = CHILD_GRACE_S if cut.paramiko else KILL_GRACE_S
            self._kills[cut.identity] = time.monotonic() + grace
        now = time.monotonic()
        for identity, due in list(self._kills.items()):
            if not is_alive(identity):
                del self._kills[identity]
            elif now >= due:
                del self._kills[identity]
                _signal(identity[0], signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)
