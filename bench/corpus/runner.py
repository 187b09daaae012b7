"""Running the corpus cases as real sessions, with bash's history as the truth.

Each case is an ssh session (real sshd, real bash, ssh in a pty) tagged with
the case's name, typed as its steps say while the agent traces it. The remote
bash of every user in play appends each command to its history file as it
runs it (PROMPT_COMMAND='history -a', HISTCONTROL empty so that nothing is
left out, HISTTIMEFORMAT so that multi-line entries stay one entry); those
files are the ground truth.

Normalisation when comparing (documented in the README): bash stores a command
typed over several lines as one entry, joined with newlines or `; ` as its
grammar allows; our record joins the lines with newlines. Both sides are
compared with every run of whitespace and semicolons made one space, and
trailing whitespace dropped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pexpect

from bench.corpus.cases import Case, Expect, Keys, Password, Ready, Resize
from tests import harness

# A line editor reads a line: readline's marker, or, with the markers off
# (the `_nm` cases), the title the case's PROMPT_COMMAND prints.
READY = rb"\x1b\[\?2004h|\x1b\]0;corpus-ready\x07"
STEP_TIMEOUT_S = 20
WRONG_PASSWORD = "not-the-password-8c1f"
RC_HOOK = (
    "\n# bastion-audit corpus: per-case settings and a history file per shell level\n"
    '[ -n "$AUDIT_SESSION" ] || AUDIT_SESSION=_direct\n'
    "HISTCONTROL=\n"
    "HISTTIMEFORMAT='%s '\n"
    "HISTSIZE=10000\n"
    "HISTFILE=~/.corpus/$AUDIT_SESSION.hist.$SHLVL\n"
    "PROMPT_COMMAND='history -a'\n"
    "[ -f ~/.corpus/$AUDIT_SESSION.rc ] && . ~/.corpus/$AUDIT_SESSION.rc\n"
)


ZSHRC = (
    "# bastion-audit corpus: zsh keeps its own history, with timestamps\n"
    "HISTFILE=~/.corpus/${AUDIT_SESSION:-_direct}.zsh_history\n"
    "HISTSIZE=10000\nSAVEHIST=10000\n"
    "setopt EXTENDED_HISTORY INC_APPEND_HISTORY\n"
    "PROMPT='z%# '\n"
)
# The command that opens a nested shell whose history is spliced in.
_OPENER_RE = re.compile(r"(bash$|bash |su |ssh |sudo (.* )?-[is]\b)")
_SHELL_OPENERS = {"zsh": re.compile(r"\bzsh$"), "fish": re.compile(r"\bfish$")}


def normalise(command: str) -> str:
    return re.sub(r"[\s;]+", " ", command).strip()


def read_zsh_history(path: Path) -> list[str]:
    """Entries of a zsh EXTENDED_HISTORY file (`: start:elapsed;command`)."""
    if not path.exists():
        return []
    entries: list[str] = []
    for raw in path.read_text(errors="replace").split("\n"):
        m = re.match(r": \d+:\d+;(.*)", raw)
        if m:
            entries.append(m.group(1))
        elif entries and entries[-1].endswith("\\"):
            entries[-1] = entries[-1][:-1] + "\n" + raw
    return entries


def read_fish_history(path: Path) -> list[str]:
    """Commands of a fish history file (`- cmd: …`, newlines as \\n)."""
    if not path.exists():
        return []
    entries = []
    for raw in path.read_text(errors="replace").split("\n"):
        if raw.startswith("- cmd: "):
            text = raw[len("- cmd: ") :]
            entries.append(text.replace("\\\\", "\0").replace("\\n", "\n"))
    return [entry.replace("\0", "\\") for entry in entries]


def read_history(path: Path) -> list[str]:
    """Entries of a bash history file written with HISTTIMEFORMAT set."""
    if not path.exists():
        return []
    entries: list[list[str]] = []
    for raw in path.read_text(errors="replace").split("\n"):
        if re.fullmatch(r"#\d+", raw):
            entries.append([])
        elif entries:
            entries[-1].append(raw)
    return ["\n".join(lines).rstrip("\n") for lines in entries]


class CaseError(Exception):
    """A case that could not be played to its end."""


@dataclass
class Users:
    main: harness.TestUser
    other: harness.TestUser


def prepare_user(user: harness.TestUser, other: harness.TestUser | None) -> None:
    """Append the corpus hook to the user's .bashrc; give it a key for `other`."""
    bashrc = user.home / ".bashrc"
    if RC_HOOK not in bashrc.read_text():
        with open(bashrc, "a") as f:
            f.write(RC_HOOK)
    corpus = user.home / ".corpus"
    corpus.mkdir(exist_ok=True)
    os.chown(corpus, user.uid, user.uid)
    (corpus / "screenrc").write_text("startup_message off\n")
    os.chown(corpus / "screenrc", user.uid, user.uid)
    zdot = corpus / "zsh"
    zdot.mkdir(exist_ok=True)
    (zdot / ".zshrc").write_text(ZSHRC)
    for path in (zdot, zdot / ".zshrc"):
        os.chown(path, user.uid, user.uid)
    if other is not None:
        key = user.home / ".ssh" / "id_other"
        shutil.copy(other.key, key)
        os.chown(key, user.uid, user.uid)
        key.chmod(0o600)


def substitute(data: bytes, users: Users, port: int, tag: str = "") -> bytes:
    return (
        data.replace(b"OTHER", users.other.name.encode())
        .replace(b"PORT", str(port).encode())
        .replace(b"TAG", tag.encode())
    )


class CaseRun:
    """One case as a live session."""

    def __init__(
        self, case: Case, users: Users, server: harness.Sshd, tag: str
    ) -> None:
        self.case, self.users, self.server, self.tag = case, users, server, tag
        self.secrets = {
            "remote": users.main.password,
            "other": users.other.password,
            "wrong": WRONG_PASSWORD,
        }

    def prepare(self) -> None:
        for old in (self.users.main.home / ".corpus").glob(f"{self.tag}.*"):
            old.unlink(missing_ok=True)
        fish = self.users.main.home / ".corpus" / f"fish-{self.tag}"
        shutil.rmtree(fish, True)
        # An empty history of its own: fish would import ~/.bash_history.
        (fish / "fish").mkdir(parents=True)
        (fish / "fish" / "fish_history").touch()
        for path in (fish, fish / "fish", fish / "fish" / "fish_history"):
            os.chown(path, self.users.main.uid, self.users.main.uid)
        if self.case.nested:  # nested cases run one at a time: the file is theirs
            for old in (self.users.other.home / ".corpus").glob("_direct.*"):
                old.unlink(missing_ok=True)
        if self.case.rc:
            rc = self.users.main.home / ".corpus" / f"{self.tag}.rc"
            rc.write_text(self.case.rc + "\n")
            os.chown(rc, self.users.main.uid, self.users.main.uid)

    def run(self) -> None:
        argv = harness.ssh_argv(
            self.users.main, self.server, "-o", f"SetEnv=AUDIT_SESSION={self.tag}"
        )
        child = harness.spawn_ssh(argv, rows=self.case.rows, cols=self.case.cols)
        child.timeout = STEP_TIMEOUT_S
        if self.case.at_login:
            child.send(self.case.at_login)
        try:
            ssh_pid = harness.ssh_pid_of(child)
            child.expect(READY)
            harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=20)
            time.sleep(0.2)
            self.play(child)
            self._leave(child)
        finally:
            child.close(force=True)

    def play(self, child: pexpect.spawn) -> None:
        """The case's steps, at the shell's prompt; CaseError names the one that failed."""
        for n, step in enumerate(self.case.steps):
            try:
                self._step(child, step)
            except pexpect.ExceptionPexpect as e:
                seen = (child.before or b"")[-300:]
                raise CaseError(
                    f"case {self.case.name}: step {n} {step!r} failed "
                    f"({type(e).__name__}); last output {seen!r}"
                ) from None

    def _drain(self, child: pexpect.spawn) -> None:
        """Forget output already seen, so that Ready waits for a new prompt."""
        try:
            while True:
                child.read_nonblocking(65536, timeout=0.05)
        except (pexpect.TIMEOUT, pexpect.EOF):
            pass

    def _step(self, child: pexpect.spawn, step: object) -> None:
        if isinstance(step, Keys):
            self._drain(child)
            child.send(substitute(step.data, self.users, self.server.port, self.tag))
            time.sleep(step.pause_s)
        elif isinstance(step, Password):
            self._drain(child)
            child.send(self.secrets[step.name].encode() + b"\r")
            time.sleep(0.5)
        elif isinstance(step, Ready):
            for _ in range(step.count):
                child.expect(READY)
            time.sleep(0.1)
        elif isinstance(step, Expect):
            child.expect(step.pattern)
        elif isinstance(step, Resize):
            child.setwinsize(step.rows, step.cols)
            time.sleep(0.5)

    def _leave(self, child: pexpect.spawn) -> None:
        if not child.isalive():
            return
        time.sleep(0.3)
        child.sendcontrol("d")
        try:
            child.expect(pexpect.EOF, timeout=10)
        except pexpect.TIMEOUT:
            child.sendline("exit")
            child.expect(pexpect.EOF, timeout=10)

    def truth(self) -> list[str]:
        """What ran, in order: the outer shell, with nested ones spliced in."""
        if self.case.expected is not None:
            return [
                substitute(e.encode(), self.users, self.server.port, self.tag).decode()
                for e in self.case.expected
            ]
        main_dir = self.users.main.home / ".corpus"
        outer = read_history(main_dir / f"{self.tag}.hist.1")
        inner: list[str] = []
        opener = _OPENER_RE
        if self.case.history == "zsh":
            inner = read_zsh_history(main_dir / f"{self.tag}.zsh_history")
            opener = _SHELL_OPENERS["zsh"]
        elif self.case.history == "fish":
            path = main_dir / f"fish-{self.tag}" / "fish" / "fish_history"
            inner = read_fish_history(path)
            opener = _SHELL_OPENERS["fish"]
        for level in range(2, 6):
            inner += read_history(main_dir / f"{self.tag}.hist.{level}")
        if self.case.nested:
            inner += read_history(self.users.other.home / ".corpus" / "_direct.hist.1")
        if not inner:
            return outer
        for i, entry in enumerate(outer):
            # The command that opened the nested shell.
            if (
                opener.search(entry)
                if opener is not _OPENER_RE
                else opener.match(entry)
            ):
                return outer[: i + 1] + inner + outer[i + 1 :]
        return outer + inner


@contextlib.contextmanager
def environment(workdir: Path) -> Iterator[tuple[harness.Sshd, Users]]:
    """A throwaway sshd and two throwaway users ready for the corpus.

    The main user may use sudo with its password (a sudoers.d drop-in, checked
    with visudo, removed afterwards), for the sudo cases.
    """
    with (
        harness.sshd(workdir) as server,
        harness.test_user(workdir, "cpa") as main,
        harness.test_user(workdir, "cpb") as other,
        sudo_rights(main),
    ):
        prepare_user(main, other)
        prepare_user(other, None)
        yield server, Users(main, other)


@contextlib.contextmanager
def sudo_rights(user: harness.TestUser) -> Iterator[None]:
    rule = Path(f"/etc/sudoers.d/bastion-audit-corpus-{user.name}")
    rule.write_text(f"{user.name} ALL=(ALL:ALL) ALL\n")
    rule.chmod(0o440)
    try:
        subprocess.run(["visudo", "-cf", str(rule)], check=True, capture_output=True)
        yield
    finally:
        rule.unlink()


def run_cases(
    cases: list[Case],
    users: Users,
    server: harness.Sshd,
    parallel: int = 4,
    make_run: type[CaseRun] | None = None,
) -> dict[str, list[str]]:
    """Run every case (nested ones one at a time); the truth for each case.

    `make_run` plays a case another way (audit-shell's paramiko backend);
    the truth is keyed by case name, whatever tag the session got.
    """
    truths: dict[str, list[str]] = {}
    alone = [c for c in cases if c.nested]
    together = [c for c in cases if not c.nested]

    def one(case: Case) -> None:
        run = (make_run or CaseRun)(case, users, server, case.name)
        run.prepare()
        run.run()
        truths[case.name] = run.truth()

    for case in alone:
        one(case)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in [pool.submit(one, case) for case in together]:
            future.result()
    return truths
