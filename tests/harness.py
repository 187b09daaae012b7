"""Real components for end-to-end tests and `make demo`.

A throwaway sshd on 127.0.0.1 and a free port (its own config and host key in
a temp dir, never the machine's sshd or port 22), test users created and
removed, the agent as a real daemon process, a real ssh client in a real pty.
Every process and user made here is owned by a context manager that removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"
PROMPT = rb"\$ $|\$ \x1b|\$ "
SSH_TERM = "xterm-256color"


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll until `predicate()` is truthy; its value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def shared_dir(prefix: str) -> Iterator[Path]:
    """A temp dir test users can reach (pytest's tmp_path is root's only)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class TestUser:
    name: str
    password: str
    home: Path
    uid: int
    key: Path  # private key that logs in as this user


@contextlib.contextmanager
def test_user(workdir: Path, prefix: str = "bat") -> Iterator[TestUser]:
    """A login user with a bash shell, a password and an authorized key."""
    name = f"{prefix}{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    try:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n", text=True, check=True
        )
        entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        key = workdir / f"{name}_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
        )
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(f"{key}.pub", ssh_dir / "authorized_keys")
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        yield TestUser(name, password, home, entry.pw_uid, key)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        time.sleep(0.1)
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


@dataclass
class Sshd:
    port: int
    process: subprocess.Popen[bytes]
    known_hosts: Path


@contextlib.contextmanager
def sshd(workdir: Path, extra_config: str = "") -> Iterator[Sshd]:
    """An sshd of our own on 127.0.0.1:<free port>, in the foreground."""
    if not Path(SSHD).exists():
        raise RuntimeError("openssh-server is not installed (make test installs it)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    host_key = workdir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
            check=True,
        )
    port = free_port()
    config = workdir / f"sshd_config.{port}"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {workdir}/sshd.{port}.pid\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "PasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM yes\n"
        "PrintMotd no\n"
        "AcceptEnv LANG LC_* AUDIT_SESSION\n"
        "StrictModes no\n"
        # A burst of logins at once: sshd's default drops unauthenticated
        # connections beyond 10.
        "MaxStartups 200\n" + extra_config
    )
    with open(workdir / f"sshd.{port}.log", "wb") as log:
        # The child keeps its own copy of the fd.
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stderr=log, stdout=log
        )
    try:
        wait_for(lambda: _accepts(port) or process.poll() is not None, timeout=10)
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd exited: {(workdir / f'sshd.{port}.log').read_text()}"
            )
        yield Sshd(port, process, workdir / f"known_hosts.{port}")
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class AgentProcess:
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def agent(
    data_dir: Path, *extra: str, poll_interval: float = 0.05
) -> Iterator[AgentProcess]:
    """`audit-agent run` as a real daemon process; SIGTERM and wait after."""
    log_path = data_dir.parent / f"{data_dir.name}.agent.log"
    if "--config" not in extra:
        # Never the machine's /etc/bastion-audit/agent.toml: defaults only.
        config = data_dir.parent / f"{data_dir.name}.agent.toml"
        config.write_text("")
        extra = ("--config", str(config), *extra)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the fd
        process = subprocess.Popen(
            [
                str(BIN / "audit-agent"),
                "run",
                "--data-dir",
                str(data_dir),
                "--poll-interval",
                str(poll_interval),
                # Only this test run's sessions: other suites may run agents
                # on the same machine, and ptrace admits one tracer.
                "--scope-pid",
                str(os.getpid()),
                *extra,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: (data_dir / "logs").is_dir() or process.poll() is not None,
            timeout=15,
        )
        if process.poll() is not None:
            raise RuntimeError(f"audit-agent exited: {log_path.read_text()}")
        yield AgentProcess(data_dir, process, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ssh_argv(
    user: TestUser, server: Sshd, *options: str, key: bool = True
) -> list[str]:
    argv = [
        "-F",
        "/dev/null",
        "-p",
        str(server.port),
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "LogLevel=ERROR",
        # What Debian's own ssh_config sends (-F /dev/null drops it): the
        # remote shell then runs in the user's UTF-8 locale.
        "-o",
        "SendEnv=LANG LC_*",
    ]
    if key:
        argv += ["-i", str(user.key), "-o", "IdentitiesOnly=yes"]
    else:
        argv += ["-o", "PubkeyAuthentication=no"]
    return [*argv, *options, f"{user.name}@127.0.0.1"]


def spawn_ssh(
    argv: list[str],
    program: str = "ssh",
    rows: int = 24,
    cols: int = 80,
    env: dict[str, str] | None = None,
) -> pexpect.spawn:
    """A real ssh client in a real pty, as a person at a terminal would run it."""
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": SSH_TERM,
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/root"),
    }
    child_env.update(env or {})
    return pexpect.spawn(
        program, argv, dimensions=(rows, cols), env=child_env, timeout=30
    )


def open_tagged(user: TestUser, server: Sshd, tag: str, *options: str) -> pexpect.spawn:
    """A tagged ssh at its prompt, with the agent's strace on it: type away."""
    child = spawn_ssh(
        ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}", *options)
    )
    child.expect(PROMPT)
    wait_for(lambda: is_traced(child.pid), timeout=10)
    return child


def is_traced(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1]) != 0
    return False


def ssh_pid_of(child: pexpect.spawn) -> int:
    """The ssh process of a spawned client (itself, or sshpass's child)."""
    import psutil

    proc = psutil.Process(child.pid)
    if proc.name() == "ssh":
        return child.pid
    return int(
        wait_for(
            lambda: next((c.pid for c in proc.children() if c.name() == "ssh"), None)
        )
    )


class LineReader:
    """Lines from a subprocess pipe with a timeout, so a test never hangs.

    Reads the fd directly: a buffered readline() would swallow lines that
    select() then no longer sees.
    """

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        self.buffer = b""

    def readline(self, timeout: float) -> str:
        import select

        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"no line within {timeout}s")
            data = os.read(self.fd, 65536)
            if not data:
                raise EOFError("the process closed its output")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", "replace") + "\n"


def run_cli(
    tool: str, *args: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args], capture_output=True, text=True, check=check
    )


def export(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli("audit-export", "--data-dir", str(data_dir), *args)
    if result.returncode != 0:
        raise AssertionError(
            f"audit-export failed ({result.returncode}): {result.stderr}"
        )
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records


def sessions_in(data_dir: Path) -> dict[str, Any]:
    """Session documents as the store has them now (newest wins)."""
    sys.path.insert(0, str(REPO))
    from agent.reader import load

    return {sid: s for sid, s in load(data_dir).sessions.items()}


def strace_processes_for(pid: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if proc.info["name"] == "strace" and "-p" in argv and str(pid) in argv:
            found.append(proc.pid)
    return found
