"""Corpus cases through audit-shell's paramiko backend, against bash's history.

The same cases and ground truth as tests/test_fidelity.py (the strace path),
a subset covering editing, tab completion, history recall, full-screen
programs, no-echo passwords, UTF-8 and a resize. Each case is typed into a
real audit-shell (as a test person, in a real pty) that opens the corpus
user's bash with paramiko; the agent reads the recordings from the spool.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from agent.shell.login import ENTER_MENU_SCREEN
from bench.corpus.cases import CASES, Case
from bench.corpus.runner import (
    READY,
    STEP_TIMEOUT_S,
    WRONG_PASSWORD,
    CaseRun,
    Users,
    environment,
    normalise,
    run_cases,
)
from tests import harness, shell_harness
from tests.shell_harness import MENU_FOOTER, TAG_RE

pytestmark = [pytest.mark.root, pytest.mark.slow]

SUBSET = (
    "edit_backspace",
    "edit_arrows_insert",
    "edit_ctrl_w",
    "complete_single_tab",
    "complete_double_tab_listing",
    "history_up_recall",
    "history_ctrl_r_enter",
    "history_bang_bang",
    "fullscreen_vi",
    "fullscreen_less",
    "secret_read_s",
    "secret_sudo",
    "utf8_argument",
    "utf8_backspace_wide",
    "long_line_resize_while_typing",
    "ctrl_c_half_typed",
)


class ParamikoCaseRun(CaseRun):
    """A case played through audit-shell (paramiko backend) instead of ssh."""

    person: harness.TestUser
    audit_shell: Path
    config: Path
    tags: dict[str, str]  # case name -> the tag audit-shell gave its session

    def run(self) -> None:
        gid = pwd.getpwnam(self.person.name).pw_gid
        child = pexpect.spawn(
            "setpriv",
            [
                f"--reuid={self.person.uid}",
                f"--regid={gid}",
                "--init-groups",
                str(self.audit_shell),
                "--config",
                str(self.config),
            ],
            env={
                "PATH": "/usr/bin:/bin",
                "TERM": harness.SSH_TERM,
                "HOME": str(self.person.home),
                "USER": self.person.name,
                "LOGNAME": self.person.name,
            },
            dimensions=(self.case.rows, self.case.cols),
            timeout=STEP_TIMEOUT_S,
        )
        try:
            child.expect(MENU_FOOTER)
            child.send(b"\r")  # the one host
            child.expect(TAG_RE)
            self.tag = child.match.group(1).decode()  # the history files' name
            self.tags[self.case.name] = self.tag
            child.expect(READY)
            time.sleep(0.2)
            self.play(child)
            time.sleep(0.3)
            child.sendcontrol("d")  # leaves bash: back to the menu
            # The menu again (its footer may be cut short at 80 columns).
            child.expect_exact(ENTER_MENU_SCREEN.encode(), timeout=10)
            child.sendcontrol("d")  # leaves audit-shell
            child.expect(pexpect.EOF, timeout=10)
        finally:
            child.close(force=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """World-traversable (pytest's tmp_path is not): the person runs from it."""
    with harness.shared_dir("bastion-audit-pfid.") as path:
        yield path


def test_corpus_subset_through_paramiko_matches_bash_history(
    tmp_path: Path, workdir: Path
) -> None:
    cases: list[Case] = [c for c in CASES if c.name in SUBSET]
    assert len(cases) == len(SUBSET)
    data_dir = tmp_path / "data"
    recordings = workdir / "recordings"
    recordings.mkdir()
    recordings.chmod(0o1733)
    intents = workdir / "intents"
    intents.mkdir()
    intents.chmod(0o1733)
    agent_config = workdir / "agent.toml"
    agent_config.write_text(
        f'intents_dir = "{intents}"\nrecordings_dir = "{recordings}"\n'
    )
    with (
        environment(workdir) as (server, users),
        harness.test_user(workdir, prefix="bfp") as person,
        harness.agent(data_dir, "--config", str(agent_config)) as agent,
    ):
        config = _shell_config(workdir, person, users, server, intents, recordings)

        class Run(ParamikoCaseRun):
            pass

        Run.person = person
        Run.audit_shell = shell_harness.launcher(workdir, person.uid)
        Run.config = config
        Run.tags = {}
        truths = run_cases(cases, users, server, parallel=3, make_run=Run)

        def ours() -> dict[str, list[str]]:
            """Commands per case, once every session is closed."""
            stored = harness.sessions_in(data_dir)
            by_tag = {s.tag: s for s in stored.values() if s.recorder == "paramiko"}
            if len(by_tag) < len(cases) or any(
                s.status != "closed" for s in by_tag.values()
            ):
                return {}
            records = harness.export(data_dir)
            found: dict[str, list[str]] = {s.id: [] for s in by_tag.values()}
            for r in records:
                found.setdefault(r["session"], []).append(normalise(r["command"]))
            return found

        try:
            commands = harness.wait_for(ours, timeout=60)
        except TimeoutError:
            pytest.fail(f"sessions not closed:\n{agent.log_text()[-4000:]}")

    by_case = {name: commands.get(tag) for name, tag in Run.tags.items()}
    assert sum(len(t) for t in truths.values()) >= len(cases)  # bash saw them
    mismatches = []
    for case in cases:
        truth = [normalise(t) for t in truths[case.name] if t.strip()]
        if by_case.get(case.name) != truth:
            mismatches.append(
                f"{case.name}:\n  bash: {truth}\n  ours: {by_case.get(case.name)}"
            )
    assert not mismatches, "\n".join(mismatches)
    # No secret typed with echo off is in the store; the recordings are gone.
    secrets = [users.main.password, users.other.password, WRONG_PASSWORD]
    for path in data_dir.rglob("*"):
        if path.is_file():
            for secret in secrets:
                assert secret.encode() not in path.read_bytes(), f"a secret in {path}"
    assert not list(recordings.iterdir())


def _shell_config(
    workdir: Path,
    person: harness.TestUser,
    users: Users,
    server: harness.Sshd,
    intents: Path,
    recordings: Path,
) -> Path:
    key = workdir / "corpus_key"
    shutil.copy(users.main.key, key)
    os.chown(key, person.uid, -1)
    key.chmod(0o600)
    path = workdir / "shell.toml"
    path.write_text(
        "[shell]\n"
        f'intents_dir = "{intents}"\n'
        f'recordings_dir = "{recordings}"\n'
        'backend = "paramiko"\n'
        "[[host]]\n"
        'name = "corpus"\n'
        'address = "127.0.0.1"\n'
        f"port = {server.port}\n"
        "  [[host.account]]\n"
        f'  name = "{users.main.name}"\n'
        f'  key_file = "{key}"\n'
        "[[grant]]\n"
        f'users = ["{person.name}"]\n'
        'hosts = ["*"]\n'
        'accounts = ["*"]\n'
    )
    os.chown(path, 0, pwd.getpwnam(person.name).pw_gid)
    path.chmod(0o640)
    return path
