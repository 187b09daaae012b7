"""The two recorders side by side: ssh traced by strace vs audit-shell's paramiko.

    sudo .venv/bin/python -m bench.paramiko_overhead [--mb 50] [--rounds 3]

One run, one throwaway sshd and agent, three ways to reach the same user,
alternated round by round:
- unaudited: an untagged ssh (the agent runs, but nothing traces it);
- ssh+strace: a tagged ssh, traced by the agent's strace;
- paramiko: audit-shell (as a test person, in a pty) with the paramiko
  backend, recording the session into the spool the agent reads.

Prints the wall time of `cat` of an MB-megabyte file read to the end by the
terminal, with ratios to unaudited and paramiko to strace; then how long the
agent took after each paramiko `cat` to have read its recording to the end
(the `echo` after it stored as a command).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

from bench.overhead import login, make_file, timed_cat
from tests import harness, shell_harness


def paramiko_login(
    workdir: Path, person: harness.TestUser, user: harness.TestUser, port: int
) -> pexpect.spawn:
    """audit-shell as `person`, paramiko backend, into `user`: at its prompt."""
    recordings, intents = workdir / "recordings", workdir / "intents"
    key = workdir / "bench_key"
    shutil.copy(user.key, key)
    os.chown(key, person.uid, -1)
    key.chmod(0o600)
    config = workdir / "shell.toml"
    config.write_text(
        f'[shell]\nintents_dir = "{intents}"\nrecordings_dir = "{recordings}"\n'
        'backend = "paramiko"\n'
        f'[[host]]\nname = "bench"\naddress = "127.0.0.1"\nport = {port}\n'
        f'  [[host.account]]\n  name = "{user.name}"\n  key_file = "{key}"\n'
        f'[[grant]]\nusers = ["{person.name}"]\nhosts = ["*"]\naccounts = ["*"]\n'
    )
    os.chown(config, 0, pwd.getpwnam(person.name).pw_gid)
    config.chmod(0o640)
    child = pexpect.spawn(
        "setpriv",
        [
            f"--reuid={person.uid}",
            f"--regid={pwd.getpwnam(person.name).pw_gid}",
            "--init-groups",
            str(shell_harness.launcher(workdir, person.uid)),
            "--config",
            str(config),
        ],
        env={"PATH": "/usr/bin:/bin", "TERM": harness.SSH_TERM, "HOME": "/"},
        dimensions=(24, 80),
        timeout=60,
    )
    child.expect(shell_harness.MENU_FOOTER)
    child.send(b"\r")
    child.expect(harness.PROMPT)
    return child


def stored(data_dir: Path, marker: str) -> bool:
    return any(marker in r["command"] for r in harness.export(data_dir))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("paramiko_overhead: error: run as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="paramiko-overhead.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        for name in ("recordings", "intents"):
            (workdir / name).mkdir(mode=0o1733)
            (workdir / name).chmod(0o1733)
        agent_config = workdir / "agent.toml"
        agent_config.write_text(
            f'intents_dir = "{workdir / "intents"}"\n'
            f'recordings_dir = "{workdir / "recordings"}"\n'
        )
        data_dir = workdir / "data"
        with (
            harness.sshd(workdir) as server,
            harness.test_user(workdir, "pov") as user,
            harness.test_user(workdir, "pop") as person,
            harness.agent(data_dir, "--config", str(agent_config)),
        ):
            big = make_file(user, args.mb)
            children = {
                "unaudited": login(harness.ssh_argv(user, server)),
                "ssh+strace": login(
                    harness.ssh_argv(
                        user, server, "-o", "SetEnv=AUDIT_SESSION=bench-strace"
                    )
                ),
                "paramiko": paramiko_login(workdir, person, user, server.port),
            }
            pid = harness.ssh_pid_of(children["ssh+strace"])
            harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
            cat: dict[str, list[float]] = {name: [] for name in children}
            lag: list[float] = []
            for n in range(args.rounds):
                for name, child in children.items():
                    cat[name].append(timed_cat(child, big))
                    if name == "paramiko":
                        # The agent has read the recording to its end once the
                        # next command is stored.
                        t0 = time.perf_counter()
                        child.send(f"echo ingested-{n}\r".encode())
                        harness.wait_for(
                            lambda n=n: stored(data_dir, f"echo ingested-{n}"),
                            timeout=600,
                            interval=0.2,
                        )
                        lag.append(time.perf_counter() - t0)
                        child.expect(harness.PROMPT)
            for child in children.values():
                child.close(force=True)
    base = statistics.median(cat["unaudited"])
    strace = statistics.median(cat["ssh+strace"])
    print(f"cat of {args.mb} MB read by the terminal, median of {args.rounds} rounds")
    print(f"{'':<11} {'cat s':>7} {'x unaudited':>11} {'x ssh+strace':>12}")
    for name, times in cat.items():
        c = statistics.median(times)
        print(f"{name:<11} {c:>7.2f} {c / base:>11.2f} {c / strace:>12.2f}")
    print(
        f"paramiko: the agent had stored the next command "
        f"{statistics.median(lag):.2f} s after each cat (median)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
