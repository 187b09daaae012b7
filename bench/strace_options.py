"""What each strace option costs the person at the terminal, side by side.

    sudo .venv/bin/python -m bench.strace_options [--mb 20] [--rounds 3] [--keys 300]

One throwaway sshd and user, no agent: the benchmark attaches strace to a
fresh ssh session itself, once per variant of session_tracker.sh's command
line, and measures the wall time of `cat` of an MB-megabyte file read to the
end by the client and the echo delay of single keystrokes, beside the same
session untraced. Variants drop or change one option at a time; the last
starts ssh under strace (`--seccomp-bpf -f`, which an attached strace cannot
use), as a login shell such as audit-shell could. Rounds alternate variants.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.overhead import keystroke_delays, login, make_file, timed_cat
from tests import harness

TRACE = ["-e", "trace=read,write,ioctl"]
CURRENT = ["-q", "-ttt", "-y", "-s", "1048576", *TRACE]  # + -P TTY -p PID -A -o LOG
VARIANTS: dict[str, list[str] | None] = {
    "untraced": None,
    "current": CURRENT,
    "no -y": ["-q", "-ttt", "-s", "1048576", *TRACE],
    "-s 65536": ["-q", "-ttt", "-y", "-s", "65536", *TRACE],
    "no -ttt": ["-q", "-y", "-s", "1048576", *TRACE],
    "no ioctl": ["-q", "-ttt", "-y", "-s", "1048576", "-e", "trace=read,write"],
    "-e signal=none": [*CURRENT, "-e", "signal=none"],
    "no -P": CURRENT,  # every fd's read/write/ioctl, the socket's too
    "seccomp (run)": CURRENT,
}


def attach(
    pid: int, tty: str, options: list[str], log: Path, use_p: bool
) -> subprocess.Popen[bytes]:
    path = ["-P", tty] if use_p else []
    argv = ["strace", *options, *path, "-p", str(pid), "-A", "-o", str(log)]
    strace = subprocess.Popen(argv, start_new_session=True)
    harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
    return strace


def detach(strace: subprocess.Popen[bytes]) -> None:
    strace.send_signal(signal.SIGTERM)
    strace.wait(20)


def run_variant(
    name: str, argv: list[str], big: str, log: Path, keys: int
) -> tuple[float, list[float]]:
    options = VARIANTS[name]
    strace = None
    if name == "seccomp (run)":
        assert options is not None
        rest = shlex.join(
            ["--seccomp-bpf", "-f", *options, "-o", str(log), "ssh", *argv]
        )
        # strace -P needs the terminal's path before ssh exists: the shell knows it.
        child = harness.spawn_ssh(
            ["-c", f'exec strace -P "$(tty)" {rest}'], program="bash"
        )
        child.timeout = 60
        child.expect(harness.PROMPT)
    else:
        child = login(argv)
        pid = harness.ssh_pid_of(child)
        if options is not None:
            tty = os.readlink(f"/proc/{pid}/fd/0")
            strace = attach(pid, tty, options, log, use_p=name != "no -P")
    try:
        cat = timed_cat(child, big)
        delays = keystroke_delays(child, keys)
    finally:
        if strace is not None:
            detach(strace)
        child.sendeof()
        child.close()
        log.unlink(missing_ok=True)
    return cat, delays


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("strace_options: error: run as root", file=sys.stderr)
        return 2
    wanted = set(args.only.split(",")) if args.only else set(VARIANTS)
    names = [n for n in VARIANTS if n in wanted or n == "untraced"]
    cat: dict[str, list[float]] = {n: [] for n in names}
    keys: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="strace-options.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        with harness.sshd(workdir) as server, harness.test_user(workdir, "sto") as user:
            big = make_file(user, args.mb)
            argv = harness.ssh_argv(user, server)
            for _ in range(args.rounds):
                for name in names:
                    c, k = run_variant(
                        name, argv, big, workdir / "log.strace", args.keys
                    )
                    cat[name].append(c)
                    keys[name].extend(k)
    base_cat = statistics.median(cat["untraced"])
    base_key = statistics.median(keys["untraced"])
    print(
        f"cat of {args.mb} MB (median of {args.rounds}) and echo delay of"
        f" {args.keys} keys x {args.rounds}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'':<16} {'cat s':>7} {'x untraced':>10} {'key p50 ms':>10}"
        f" {'key p95 ms':>10} {'x untraced':>10}"
    )
    for name in names:
        c = statistics.median(cat[name])
        k50 = statistics.median(keys[name])
        k95 = statistics.quantiles(keys[name], n=20)[18]
        print(
            f"{name:<16} {c:>7.2f} {c / base_cat:>10.2f} {k50 * 1e3:>10.2f}"
            f" {k95 * 1e3:>10.2f} {k50 / base_key:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
