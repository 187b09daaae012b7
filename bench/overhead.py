"""What auditing costs the person at the terminal, side by side with tlog.

    sudo .venv/bin/python -m bench.overhead [--mb 50] [--rounds 3] [--keys 1000]

One run, one throwaway sshd, three ways to log in, alternated round by round:
- unaudited: an untagged ssh (the agent runs, but nothing traces it);
- audited: a tagged ssh, traced by the agent's strace;
- tlog: Debian's tlog-rec-session as the remote login shell (set up as
  shared/notes/peers.md describes: SUID binary, /var/run/tlog 1777, a file
  writer; and a /var/run/utmp, without which utempter and tlog fail on a
  machine without systemd; every change is undone at the end).

Prints the wall time of `cat` of an MB-megabyte file read to the end by the
client, and the echo delay of single keystrokes, with ratios to unaudited.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests import harness

DONE = b"__BENCH_DONE__"
TLOG_CONF = Path("/etc/tlog/tlog-rec-session.conf")
TLOG_BIN = Path("/usr/bin/tlog-rec-session")


def read_until(
    fd: int, marker: bytes, then: bytes = b"", timeout: float = 600.0
) -> None:
    """Read the pty as fast as a terminal would, until `marker`, then `then`."""
    deadline = time.monotonic() + timeout
    tail = b""
    found = False
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no {marker!r}")
        data = tail + os.read(fd, 1 << 20)
        if not found and marker in data:
            found = True
            data = data[data.index(marker) + len(marker) :]
        if found and then in data:
            return
        tail = data[-max(len(marker), len(then)) :]


def login(argv: list[str], rows: int = 24, cols: int = 80):
    child = harness.spawn_ssh(argv, rows=rows, cols=cols)
    child.timeout = 60
    child.expect(harness.PROMPT)
    return child


def timed_cat(child, path: str) -> float:
    # The marker is built by the shell, so the echoed command line never matches.
    child.send(f"cat {path}; echo __BENCH_''DONE__\r".encode())
    t0 = time.perf_counter()
    read_until(child.child_fd, DONE + b"\r\n", then=b"$ ")
    return time.perf_counter() - t0


def keystroke_delays(child, count: int) -> list[float]:
    """Echo delay of single keys typed at the prompt."""
    fd = child.child_fd
    delays = []
    for n in range(count):
        t0 = time.perf_counter()
        os.write(fd, b"x")
        read_until(fd, b"x", timeout=10)
        delays.append(time.perf_counter() - t0)
        if n % 50 == 49:
            os.write(fd, b"\x15")  # Ctrl-U: start the line again
            time.sleep(0.05)
            with contextlib.suppress(BlockingIOError, OSError):
                while select.select([fd], [], [], 0.05)[0]:
                    os.read(fd, 65536)
    os.write(fd, b"\x15")
    return delays


@contextlib.contextmanager
def tlog_shell(user: harness.TestUser, workdir: Path) -> Iterator[Path]:
    """Make tlog-rec-session this user's login shell; undo everything after."""
    subprocess.run(
        [str(harness.REPO / "scripts" / "ensure-packages.sh"), "tlog"], check=True
    )
    saved_conf = TLOG_CONF.read_bytes() if TLOG_CONF.exists() else None
    saved_mode = TLOG_BIN.stat().st_mode
    run_dir = Path("/var/run/tlog")
    made_run_dir = not run_dir.exists()
    # Without a utmp file (no systemd here) utempter fails and tlog with it.
    utmp = Path("/var/run/utmp")
    made_utmp = not utmp.exists()
    out = workdir / "tlog.json"
    out.touch()
    os.chown(out, user.uid, user.uid)
    try:
        TLOG_CONF.write_text(
            '{"shell": "/bin/bash", "writer": "file",'
            ' "log": {"input": true, "output": true, "window": true},'
            f' "file": {{"path": "{out}"}}}}\n'
        )
        run_dir.mkdir(exist_ok=True)
        run_dir.chmod(0o1777)
        if made_utmp:
            utmp.touch()
            shutil.chown(utmp, "root", "utmp")
            utmp.chmod(0o664)
        TLOG_BIN.chmod(saved_mode | 0o4000)
        subprocess.run(["usermod", "-s", str(TLOG_BIN), user.name], check=True)
        yield out
    finally:
        subprocess.run(["usermod", "-s", "/bin/bash", user.name], check=False)
        TLOG_BIN.chmod(saved_mode)
        if saved_conf is None:
            TLOG_CONF.unlink(missing_ok=True)
        else:
            TLOG_CONF.write_bytes(saved_conf)
        if made_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        if made_utmp:
            utmp.unlink(missing_ok=True)


def make_file(user: harness.TestUser, megabytes: int) -> str:
    path = user.home / "big.txt"
    line = b"%08d abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    with open(path, "wb") as f:
        for n in range(megabytes * (1 << 20) // 73):
            f.write(line % n)
    os.chown(path, user.uid, user.uid)
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--no-tlog", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("overhead: error: run as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="overhead.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        with (
            harness.sshd(workdir) as server,
            harness.test_user(workdir, "ovh") as user,
            harness.test_user(workdir, "ovt") as tlog_user,
            harness.agent(workdir / "data"),
        ):
            big = make_file(user, args.mb)
            tlog_big = make_file(tlog_user, args.mb)
            ways = {
                "unaudited": (harness.ssh_argv(user, server), big),
                "audited": (
                    harness.ssh_argv(
                        user, server, "-o", "SetEnv=AUDIT_SESSION=bench-overhead"
                    ),
                    big,
                ),
            }
            cat: dict[str, list[float]] = {name: [] for name in ways}
            keys: dict[str, list[float]] = {name: [] for name in ways}
            stack = contextlib.ExitStack()
            with stack:
                if not args.no_tlog:
                    stack.enter_context(tlog_shell(tlog_user, workdir))
                    ways["tlog"] = (harness.ssh_argv(tlog_user, server), tlog_big)
                    cat["tlog"], keys["tlog"] = [], []
                children = {name: login(argv) for name, (argv, _) in ways.items()}
                if "audited" in children:
                    pid = harness.ssh_pid_of(children["audited"])
                    harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
                for _ in range(args.rounds):
                    for name, child in children.items():
                        cat[name].append(timed_cat(child, ways[name][1]))
                for name, child in children.items():
                    keys[name] = keystroke_delays(child, args.keys)
                for child in children.values():
                    child.sendeof()
                    child.close()
    base_cat = statistics.median(cat["unaudited"])
    base_key = statistics.median(keys["unaudited"])
    print(
        f"cat of {args.mb} MB, median of {args.rounds} rounds; "
        f"echo delay over {args.keys} keystrokes"
    )
    print(
        f"{'':<10} {'cat s':>7} {'x unaudited':>11} {'key p50 ms':>10} {'key p95 ms':>10}"
        f" {'x unaudited':>11}"
    )
    for name in cat:
        c = statistics.median(cat[name])
        k50 = statistics.median(keys[name])
        k95 = statistics.quantiles(keys[name], n=20)[18]
        print(
            f"{name:<10} {c:>7.2f} {c / base_cat:>11.2f} {k50 * 1e3:>10.2f} "
            f"{k95 * 1e3:>10.2f} {k50 / base_key:>11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
