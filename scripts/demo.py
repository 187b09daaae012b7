"""make demo: watch the agent audit a scripted session, with nothing to set up.

Starts a throwaway sshd on 127.0.0.1 (a free port, its own host key), a
throwaway user, the agent on a temporary data directory and audit-tail; then
types a few commands into a tagged ssh session the way a person would (with a
backspace, a tab completion and an up-arrow recall) and shows what audit-tail
printed. Everything is removed afterwards. Needs root.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import harness

# What the scripted person types (with a pause between the pieces), and what
# the remote shell really runs.
KEYS: list[tuple[tuple[bytes, ...], str]] = [
    ((b"echo hello from the demo\r",), "echo hello from the demo"),
    ((b"uname -sr\r",), "uname -sr"),
    ((b"cat /etc/debian_vers", b"\t", b"\r"), "cat /etc/debian_version"),
    ((b"echo typo", b"\x7f\x7f\x7f\x7f", b"no typo\r"), "echo no typo"),
    ((b"\x1b[A", b"\r"), "echo no typo"),
]
PAUSE_S = 0.3


def main() -> int:
    if os.geteuid() != 0:
        print(
            "demo: error: run as root (the agent traces other users' ssh)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bastion-audit-demo.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        data_dir = workdir / "data"
        with (
            harness.sshd(workdir) as server,
            harness.test_user(workdir, "demo") as user,
            harness.agent(data_dir) as agent,
        ):
            print(f"demo: agent running on {data_dir}; sshd on 127.0.0.1:{server.port}")
            tail = subprocess.Popen(
                [str(harness.BIN / "audit-tail"), "--data-dir", str(data_dir)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                return drive_session(user, server, tail)
            finally:
                tail.terminate()
                tail.wait(10)
                if agent.process.poll() is not None:
                    print(agent.log_text(), file=sys.stderr)


def drive_session(
    user: harness.TestUser, server: harness.Sshd, tail: subprocess.Popen[str]
) -> int:
    tag = f"demo-{secrets.token_hex(3)}"
    argv = harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    print(f"demo: ssh {' '.join(argv)}")
    child = harness.spawn_ssh(argv)
    ssh_pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(ssh_pid), timeout=10)
    for pieces, _ in KEYS:
        for piece in pieces:
            child.send(piece)
            time.sleep(PAUSE_S)
        child.expect(harness.PROMPT)
    child.sendeof()
    child.close()

    print("demo: the session typed (keys as sent):")
    for pieces, _ in KEYS:
        print(f"    {b''.join(pieces)!r}")
    print("demo: audit-tail printed:")
    printed: list[str] = []
    reader = harness.LineReader(tail.stdout)
    try:
        while len(printed) < len(KEYS):
            line = reader.readline(timeout=20)
            printed.append(line.rstrip("\n"))
            print(f"    {printed[-1]}")
    except TimeoutError:
        print("demo: error: audit-tail did not show every command", file=sys.stderr)
        return 1
    got = [line.split("\t")[-1] for line in printed]
    want = [command for _, command in KEYS]
    if got != want:
        print(f"demo: error: expected {want}, got {got}", file=sys.stderr)
        return 1
    print(f"demo: all {len(want)} commands audited, as the remote bash ran them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
