"""A hostile bastion user against the tracer: each attack with real processes.

Issue 14 (findings 2, 6, 7; a ControlMaster under another name is in
test_supervision) and issue 16 (huge argv, sparse "ssh", a session
the agent's own strace holds): the user runs their own processes as a real
unprivileged account (setpriv/runuser), against the real agent, sshd and ssh.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests import harness
from tests.test_restart import start_agent, stop_agent
from tests.test_supervision import NOTICE, agent_with, tagged, wait_ended
from tracer.ownership import CHILD_PATH, Owner, ssh_owner, strace_owner
from tracer.procfs import read_start_ticks
from tracer.session_log import find_logs

__all__ = ["agent_with"]  # a fixture, used by name

pytestmark = [pytest.mark.root, pytest.mark.slow]

# audit-shell closes an ssh it sees untraced for this long (agent/shell).
AUDIT_SHELL_WAIT_S = 5.0


def as_user(user: harness.TestUser, *argv: str) -> list[str]:
    return ["runuser", "-u", user.name, "--", *argv]


@pytest.fixture
def own_argv(user: harness.TestUser, server: harness.Sshd):
    """ssh argv the user can run themselves (their own copy of the key)."""
    key = user.home / ".ssh" / "id_attack"
    shutil.copy(user.key, key)
    os.chown(key, user.uid, user.uid)

    def argv(tag: str, *extra: str) -> list[str]:
        out = tagged(user, server, tag, *extra)
        out[out.index(str(user.key))] = str(key)
        out[out.index(f"UserKnownHostsFile={server.known_hosts}")] = (
            "UserKnownHostsFile=/dev/null"
        )
        return out

    yield argv
    key.unlink(missing_ok=True)


@pytest.fixture
def user_dir(user: harness.TestUser) -> Iterator[Path]:
    """A directory of the user's own under /dev (readlink then says /dev/...)."""
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="attack."))
    os.chown(path, user.uid, user.uid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- issue 14.2: root writes where a user points -------------------------------


def test_root_never_writes_through_a_deleted_stdin_symlink(
    agent_with, user, own_argv, user_dir, tmp_path
) -> None:
    """stdin a deleted file whose "x (deleted)" name is now a symlink anywhere."""
    agent = agent_with()
    victim = tmp_path / "root-owned"
    precious = b"root's own data, not to be overwritten\n" * 20
    victim.write_bytes(precious)
    victim.chmod(0o644)
    x = user_dir / "x"
    script = (
        f": >{shlex.quote(str(x))}; exec 0<{shlex.quote(str(x))}; "
        f"rm {shlex.quote(str(x))}; "
        f"ln -s {shlex.quote(str(victim))} {shlex.quote(f'{x} (deleted)')}; "
        f"exec ssh {shlex.join(own_argv('deleted'))} sleep 60"
    )
    ssh = subprocess.Popen(
        as_user(user, "bash", "-c", script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        ssh.wait(30)
    finally:
        if ssh.poll() is None:
            ssh.kill()
            ssh.wait()
    ended = wait_ended(agent.data_dir, "deleted", "terminated")
    assert "no terminal" in ended.end_reason
    assert victim.read_bytes() == precious


# -- issue 14.6: escape tracing ------------------------------------------------


def test_a_users_own_strace_writing_into_the_logs_dir_is_not_adopted(
    agent_with, user, own_argv
) -> None:
    agent = agent_with()
    logs = agent.data_dir / "logs"
    child = harness.spawn_ssh(
        as_user(
            user,
            "strace",
            "-o",
            "/dev/null",
            "-P",
            f"{logs}/x",
            "ssh",
            *own_argv("ownstrace"),
        )[1:],
        program="runuser",
    )
    child.expect(NOTICE, timeout=30)
    child.expect(harness.pexpect.EOF)
    child.close()
    ended = wait_ended(agent.data_dir, "ownstrace", "terminated")
    assert "already traced by another tracer" in ended.end_reason
    assert "adopted" not in agent.log_text()


@pytest.fixture
def fake_ssh(tmp_path: Path) -> Path:
    """A shell whose file is named ssh (a copy of dash), anyone may run it."""
    path = tmp_path / "fake" / "ssh"
    path.parent.mkdir()
    path.parent.chmod(0o755)
    tmp_path.chmod(0o755)
    shutil.copy("/bin/dash", path)
    path.chmod(0o755)
    return path


def test_an_untagged_ssh_that_execs_a_tagged_one_is_traced(
    agent_with, user, server, fake_ssh
) -> None:
    agent = agent_with()
    real = tagged(user, server, "reexec")
    # As ssh reads it: -c takes an argument, then the host; no tag. dash runs
    # the -c string: it waits until discovery has looked at it, then execs a
    # real tagged ssh in the same pid.
    child = harness.spawn_ssh(
        ["-c", f"sleep 1; exec ssh {shlex.join(real)}", "host"],
        program=str(fake_ssh),
    )
    try:
        pid = child.pid
        harness.wait_for(
            lambda: os.readlink(f"/proc/{pid}/exe") == shutil.which("ssh"), timeout=10
        )
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=10)
        child.send(b"echo after-exec\r")
        child.expect(harness.PROMPT)
        harness.wait_for(
            lambda: (
                [
                    r["command"]
                    for r in harness.export(agent.data_dir, "--session", "reexec")
                ]
                == ["echo after-exec"]
            )
        )
        # Before its exec it was an untagged ssh: on record as that too.
        (before,) = [
            s
            for s in harness.sessions_in(agent.data_dir).values()
            if s.ssh_pid == pid and s.id != "reexec"
        ]
        assert before.status == "untagged"
    finally:
        child.close(force=True)


# -- issue 14.7: markers matched only as strace's own exit lines -------------------


def test_a_prompt_holding_an_exit_line_does_not_hide_a_restart_gap(
    tmp_path: Path, user, server
) -> None:
    data_dir = tmp_path / "data"
    agent = start_agent(data_dir)
    harness.wait_for(lambda: (data_dir / "logs").is_dir(), timeout=15)
    child = harness.spawn_ssh(tagged(user, server, "ps1"))
    pid = harness.ssh_pid_of(child)
    try:
        child.expect(harness.PROMPT)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"PS1='+++ exited with 0 +++ $ '\r")
        child.expect(rb"\+\+\+ exited with 0 \+\+\+ \$ ")
        harness.wait_for(
            lambda: [r["command"] for r in harness.export(data_dir, "--session", "ps1")]
        )
        stop_agent(agent)  # its strace detaches; the log must say so
        assert not harness.is_traced(pid)
        child.send(b"echo while-down\r")
        child.expect(rb"while-down\r\n.*\+\+\+ \$ ")
        agent = start_agent(data_dir)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
        child.send(b"echo after\r")
        child.expect(rb"after\r\n.*\+\+\+ \$ ")
        harness.wait_for(
            lambda: (
                [r["command"] for r in harness.export(data_dir, "--session", "ps1")][
                    -1:
                ]
                == ["echo after"]
            )
        )
        gaps = harness.sessions_in(data_dir)["ps1"].gaps
        assert len(gaps) == 1, gaps
    finally:
        child.sendeof()
        child.close()
        stop_agent(agent)


# -- issue 16: one user cannot stall the tracer ------------------------------------


def test_huge_argv_does_not_delay_another_users_tracing(
    agent_with, user, server, fake_ssh
) -> None:
    """ssh-named processes with 1.5 MB of -o SetEnv each, started over and over."""
    agent_with()
    # MAX_ARG_STRLEN: one argument holds at most 128 KiB.
    value = "SetEnv=" + " ".join(["V=" + "x" * 96] * 100)
    junk = " ".join(["-o", shlex.quote(value)] * 150)
    loop = fake_ssh.parent / "flood.sh"
    # Six at any moment, each one replaced by a new process when it ends.
    one = f"while :; do {shlex.quote(str(fake_ssh))} -c 'sleep 3' host {junk}; done"
    loop.write_text(f"{one} &\n" * 6 + "wait\n")
    flood = subprocess.Popen(["bash", str(loop)], start_new_session=True)
    try:
        time.sleep(1.0)  # the flood is under way
        t0 = time.monotonic()
        child = harness.spawn_ssh(tagged(user, server, "victim"))
        pid = harness.ssh_pid_of(child)
        harness.wait_for(lambda: harness.is_traced(pid), timeout=30, interval=0.01)
        traced_after = time.monotonic() - t0
        child.close(force=True)
        # A functional bound, not a speed claim: audit-shell gives up after this.
        assert traced_after < AUDIT_SHELL_WAIT_S, traced_after
    finally:
        os.killpg(flood.pid, signal.SIGKILL)
        flood.wait()


def _tracker_group(ssh_pid: int) -> int | None:
    """The process group of the session_tracker.sh started for `ssh_pid`
    (still the script, or the strace it became)."""
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        script = len(argv) > 1 and argv[1].endswith("session_tracker.sh")
        strace = bool(argv) and os.path.basename(argv[0]) == "strace"
        if (script or strace) and str(ssh_pid) in argv:
            try:
                return os.getpgid(proc.pid)
            except ProcessLookupError:
                return None
    return None


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live members: an orphan's zombie waits for init, which may not reap."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def test_a_sparse_ssh_binary_is_read_within_bounds(agent_with, tmp_path: Path) -> None:
    """A 2 GiB sparse copy of bash named ssh: the version read stays small."""
    agent_with()
    sparse = tmp_path / "sparse" / "ssh"
    sparse.parent.mkdir()
    shutil.copy("/bin/bash", sparse)
    os.truncate(sparse, 2 << 30)
    child = harness.spawn_ssh(
        ["-c", "sleep 30; :", "host", "-o", "SetEnv=AUDIT_SESSION=sparse"],
        program=str(sparse),
    )
    biggest = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pgid = _tracker_group(child.pid)
            if pgid is None:
                time.sleep(0.005)
                continue
            for proc in _group_members(pgid):
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                biggest = max(biggest, rss)
                if rss > 256 << 20:  # today's unbounded grep: stop it early
                    proc.kill()
            if harness.is_traced(child.pid):
                break
            time.sleep(0.005)
        assert biggest < 64 << 20, f"a tracker process reached {biggest >> 20} MiB"
    finally:
        child.close(force=True)


def test_nothing_a_tracker_starts_outlives_it(agent_with, tmp_path: Path) -> None:
    """The agent stopped while a tracker runs: nothing of that tracker is left."""
    agent = agent_with()
    sparse = tmp_path / "sparse" / "ssh"
    sparse.parent.mkdir()
    shutil.copy("/bin/bash", sparse)
    os.truncate(sparse, 2 << 30)  # today: a long read of the binary
    child = harness.spawn_ssh(
        ["-c", "sleep 30; :", "host", "-o", "SetEnv=AUDIT_SESSION=outlive"],
        program=str(sparse),
    )
    try:
        pgid = harness.wait_for(lambda: _tracker_group(child.pid), interval=0.002)
        # Stopped while it works: once a child of the tracker has run a while
        # (or the tracker is done and strace runs).
        seen: dict[int, float] = {}

        def busy() -> bool:
            now = time.monotonic()
            for p in _group_members(pgid):
                if p.pid != pgid and now - seen.setdefault(p.pid, now) > 0.2:
                    return True
            return harness.is_traced(child.pid)

        harness.wait_for(busy, timeout=10, interval=0.01)
        agent.process.send_signal(signal.SIGTERM)
        agent.process.wait(20)
        time.sleep(0.2)
        left = [(p, p.name()) for p in _group_members(pgid)]
        for proc, _ in left:
            proc.kill()
        assert not left, [name for _, name in left]
    finally:
        child.close(force=True)


def test_two_trackers_that_raced_leave_two_logs_and_the_winner_is_ours(
    tmp_path: Path,
) -> None:
    """The second of two racing trackers finds TAG.strace made but still empty
    (the first has not written its start line) and makes TAG~PID-TICKS.strace;
    then the first writes its start line. Both logs name the ssh. The strace
    that won writes the second: it is ours all the same, and the session must
    not be cut (a clean-clone run of test_a_session_our_own_strace_holds_...
    cut it as "already traced by another tracer")."""
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    traced = subprocess.Popen(["sleep", "60"])
    strace = None
    try:
        ticks = read_start_ticks(traced.pid)
        assert ticks is not None
        identity = (traced.pid, ticks)
        line = (
            '#bastion-audit {"event":"start","v":1,"time":1.0,"tag":"race",'
            f'"ssh_pid":{traced.pid},"start_ticks":{ticks},"started_at":1.0,'
            '"uid":0,"user":"root","tty":"","argv_b64":""}\n'
        )
        first, second = logs / "race.strace", logs / f"race~{traced.pid}-{ticks}.strace"
        for log in (first, second):
            log.write_text(line)
            log.chmod(0o600)
        binary = shutil.which("strace", path=CHILD_PATH)
        assert binary is not None
        strace = subprocess.Popen(
            [
                binary,
                "-q",
                "-e",
                "trace=none",
                "-p",
                str(traced.pid),
                "-A",
                "-o",
                str(second),
            ]
        )
        harness.wait_for(lambda: harness.is_traced(traced.pid), timeout=10)
        assert find_logs(logs, "race", identity) == [first, second]
        assert strace_owner(strace.pid, [first]) is None  # the first log alone
        assert ssh_owner(strace.pid, logs, "race", identity) is Owner.AGENT
    finally:
        for process in (strace, traced):
            if process is not None:
                process.kill()
                process.wait()


class GatedTrackers:
    """The agent's tracker_script: session_tracker.sh behind a gate.

    Each tracker the agent starts says it is held, then waits for the gate
    before it execs the real script. Deterministic, where stopping it on the
    kernel's exec event was not: on a loaded machine the tracker had exec'd
    strace before the test's thread looked (2 clean-clone runs in 3).
    """

    def __init__(self, workdir: Path) -> None:
        self.script = workdir / "gated_tracker.sh"
        self._held = workdir / "tracker.held"
        self._gate = workdir / "tracker.gate"
        real = harness.REPO / "scripts" / "session_tracker.sh"
        self.script.write_text(
            "#!/bin/bash\n"
            f": >{shlex.quote(str(self._held))}\n"
            f"while [ ! -e {shlex.quote(str(self._gate))} ]; do sleep 0.01; done\n"
            f'exec {shlex.quote(str(real))} "$@"\n'
        )
        self.script.chmod(0o755)

    @property
    def held(self) -> bool:
        return self._held.exists()

    def open(self) -> None:
        self._gate.touch()


def test_a_session_our_own_strace_holds_is_never_cut(
    agent_with, user, server, tmp_path: Path
) -> None:
    """Two of our trackers race for one ssh (sudo mode beside the agent, or two
    agents on one data dir): the one that loses must not end the session."""
    hold = GatedTrackers(tmp_path)
    agent = agent_with(tracker_script=str(hold.script))
    script = harness.REPO / "scripts" / "session_tracker.sh"
    child = harness.spawn_ssh(tagged(user, server, "race"))
    pid = harness.ssh_pid_of(child)
    other = None
    try:
        # Hold the agent's tracker before it attaches; another root tracker of
        # the same data dir attaches meanwhile; then let the agent's go on.
        harness.wait_for(lambda: hold.held, interval=0.001)
        assert not harness.is_traced(pid)
        other = subprocess.Popen(
            [str(script), "--data-dir", str(agent.data_dir), "--pid", str(pid), "race"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        harness.wait_for(lambda: harness.is_traced(pid), timeout=15)
        hold.open()  # the agent's tracker goes on, and loses
        child.expect(harness.PROMPT)
        child.send(b"echo still-here\r")
        child.expect(rb"still-here\r\n")
        child.expect(harness.PROMPT)
        time.sleep(1.0)  # the agent has judged its tracker's exit by now
        assert child.isalive()
        assert "already traced by another tracer" not in agent.log_text()
        assert "could not attach" not in agent.log_text()
        harness.wait_for(
            lambda: (
                [
                    r["command"]
                    for r in harness.export(agent.data_dir, "--session", "race")
                ]
                == ["echo still-here"]
            )
        )
        child.sendeof()
        child.expect(harness.pexpect.EOF)
    finally:
        hold.open()
        child.close(force=True)
        if other is not None:
            other.wait(15)
