"""Soak and faults: many live sessions for a long time, the agent killed and
restarted, the data disk filled to its reserve, one session flooding its log.

    sudo .venv/bin/python -m bench.soak [--minutes 30] [--sessions 30]
        [--restart-every-s 180] [--flood-at-s 120] [--fill-at-s 600]

One throwaway sshd and user; the agent (strict mode) on a small tmpfs data
disk the benchmark mounts (`--disk-mib`, reserve `--reserve-mib`), scoped to
this run. Meanwhile:

- the sessions type a command every 0.5 to 3 s; a few run `top` (and leave it
  with q), `cat` a large file, or paste many lines at once;
- the agent is killed with SIGKILL and started again every
  `--restart-every-s` (its straces go on and the next agent adopts them);
- once, the disk is filled to below its reserve for `--fill-hold-s`, and a new
  session is opened meanwhile (strict refuses it, saying why);
- one session floods its output (`cat /dev/urandom | base64`) past
  `log_max_bytes` (strict ends it, saying why).

At the end every command typed must be stored exactly once, in order, in
every session, except what the mode cut (each with its reason); the agent's
RSS at the same age in each of its runs after `--steady-after-s` must be flat
(max/min); and no process of the agent's (itself, its trackers, straces) may
hold a file open for writing outside DATA_DIR (sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests import harness

PROMPT_TIMEOUT_S = 120


@dataclass
class Session:
    tag: str
    kind: str  # plain, top, cat, paste, flood
    typed: list[str] = field(default_factory=list)
    broken: str = ""  # why it stopped typing early
    ended: bool = False


def tagged(user: harness.TestUser, server: harness.Sshd, tag: str) -> list[str]:
    return harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")


class AgentRuns:
    """The agent, started, killed with SIGKILL and started again."""

    def __init__(self, data_dir: Path, config: Path, log_path: Path) -> None:
        self.argv = [
            str(harness.BIN / "audit-agent"),
            "run",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
            "--scope-pid",
            str(os.getpid()),
        ]
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.rss_at_age: list[tuple[float, int]] = []  # run start, RSS at the age

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=log, start_new_session=True
            )
        self.started_at = time.monotonic()
        harness.wait_for(lambda: (self.data_dir / "status.json").exists(), 30)

    def kill_and_restart(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def rss(self) -> int:
        assert self.process is not None
        try:
            return int(psutil.Process(self.process.pid).memory_info().rss)
        except psutil.Error:
            return 0


def writers_outside(agent_pid: int, data_dir: Path) -> set[str]:
    """Files the agent and its children hold open for writing outside DATA_DIR."""
    found: set[str] = set()
    try:
        procs = [psutil.Process(agent_pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return found
    inside = str(data_dir) + "/"
    for proc in procs:
        try:
            for f in proc.open_files():
                if f.fd <= 2:
                    continue  # stdin, out, err: the benchmark's own log
                writing = f.mode in ("w", "a", "r+", "a+", "w+")
                if writing and not f.path.startswith(inside):
                    found.add(f"{proc.name()}: {f.path}")
        except psutil.Error:
            continue
    return found


def mount_disk(size_mib: int) -> Path:
    top = Path(tempfile.mkdtemp(prefix="soak-disk."))
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size_mib}m,mode=0700",
            "tmpfs",
            str(top),
        ],
        check=True,
    )
    return top


def fill(path: Path, leave: int) -> None:
    """Real pages until `leave` bytes are free on `path`'s filesystem."""
    block = b"\0" * (1 << 20)
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize <= leave + len(block):
                break
            f.write(block)


class Soak:
    def __init__(self, args: argparse.Namespace, user, server, big: Path) -> None:
        self.args = args
        self.user = user
        self.server = server
        self.big = big
        self.stop = threading.Event()
        self.sessions: list[Session] = []
        self.refused: list[str] = []
        self.errors: list[str] = []

    def play(self, session: Session, flood_at: float) -> None:
        """One session typing until the end (or until the agent cuts it)."""
        rng = random.Random(session.tag)
        child = harness.spawn_ssh(tagged(self.user, self.server, session.tag))
        child.timeout = PROMPT_TIMEOUT_S
        try:
            child.expect(harness.PROMPT)
            n = 0
            while not self.stop.is_set():
                n += 1
                if session.kind == "flood" and time.monotonic() >= flood_at:
                    self._flood(child, session)
                    return
                self._one(child, session, n, rng)
                self.stop.wait(rng.uniform(0.5, 3.0))
            child.sendeof()
            child.expect(harness.pexpect.EOF)
            session.ended = True
        except (harness.pexpect.TIMEOUT, harness.pexpect.EOF) as e:
            session.broken = type(e).__name__
        finally:
            child.close(force=True)

    def _one(self, child, session: Session, n: int, rng: random.Random) -> None:
        if session.kind == "top" and n % 5 == 0:
            child.send(b"top -d 0.5\r")
            session.typed.append("top -d 0.5")
            time.sleep(rng.uniform(1.0, 3.0))
            child.send(b"q")
        elif session.kind == "cat" and n % 16 == 0:
            line = f"cat {self.big}"
            child.send(line.encode() + b"\r")
            session.typed.append(line)
        elif session.kind == "paste" and n % 4 == 0:
            lines = [f"echo {session.tag}-paste-{n}-{k}" for k in range(20)]
            child.send("".join(line + "\r" for line in lines).encode())
            session.typed.extend(lines)
            for _ in lines:
                child.expect(harness.PROMPT)
            return
        else:
            line = f"echo {session.tag}-{n}"
            child.send(line.encode() + b"\r")
            session.typed.append(line)
        child.expect(harness.PROMPT)

    def _flood(self, child, session: Session) -> None:
        line = "cat /dev/urandom | base64"
        child.send(line.encode() + b"\r")
        session.typed.append(line)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # read it all, as a terminal would
            try:
                child.read_nonblocking(1 << 20, timeout=1)
            except harness.pexpect.TIMEOUT:
                continue
            except harness.pexpect.EOF:
                session.ended = True
                return
        session.broken = "the flood was not cut"

    def probe_refused(self, tag: str) -> None:
        """A new session while the disk is below its reserve: refused."""
        child = harness.spawn_ssh(tagged(self.user, self.server, tag))
        try:
            child.expect(harness.pexpect.EOF, timeout=60)
            self.refused.append(tag)
        except harness.pexpect.TIMEOUT:
            self.errors.append(f"{tag}: not refused while the disk was full")
        finally:
            child.close(force=True)


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="soak."))
    work.chmod(0o755)
    disk = mount_disk(args.disk_mib)
    data_dir = disk / "data"
    config = work / "agent.toml"
    config.write_text(
        f"log_max_bytes = {args.log_max_mib << 20}\n"
        f"disk_reserve_bytes = {args.reserve_mib << 20}\n"
        'intents_dir = "/nonexistent"\nrecordings_dir = "/nonexistent"\n'
    )
    big = work / "big.txt"
    with open(big, "w") as f:
        for n in range(args.cat_mib * 1024):  # about 1 KiB a turn
            f.write(f"line {n:08d} " + "x" * 50 + "\n" + ("y" * 60 + "\n") * 15)
    big.chmod(0o644)
    agent = AgentRuns(data_dir, config, work / "agent.log")
    try:
        with (
            harness.sshd(work) as server,
            harness.test_user(work, prefix="soak") as user,
        ):
            return soak(args, agent, user, server, big, data_dir, disk)
    finally:
        agent.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
        with contextlib.suppress(OSError):
            disk.rmdir()
        print(f"agent log: {work / 'agent.log'}")


def soak(args, agent: AgentRuns, user, server, big: Path, data_dir: Path, disk: Path):
    agent.start()
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    kinds = ["flood"] + ["top"] * 3 + ["cat"] * 3 + ["paste"] * 2
    kinds += ["plain"] * (args.sessions - len(kinds))
    soak = Soak(args, user, server, big)
    soak.sessions = [
        Session(f"soak{n:02d}-{secrets.token_hex(2)}", kind)
        for n, kind in enumerate(kinds[: args.sessions])
    ]
    threads = [
        threading.Thread(target=soak.play, args=(s, t0 + args.flood_at_s), daemon=True)
        for s in soak.sessions
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    outside: set[str] = set()
    filled = False
    next_restart = t0 + args.restart_every_s
    sample_at_age = args.restart_every_s * 0.8
    sampled = False
    while time.monotonic() < end:
        now = time.monotonic()
        assert agent.process is not None
        outside |= writers_outside(agent.process.pid, data_dir)
        age = now - agent.started_at
        if not sampled and age >= sample_at_age:
            agent.rss_at_age.append((agent.started_at - t0, agent.rss()))
            sampled = True
        if not filled and now - t0 >= args.fill_at_s:
            filled = True
            fill(disk / "filler", leave=(args.reserve_mib << 20) * 3 // 4)
            time.sleep(2)
            soak.probe_refused(f"refused-{secrets.token_hex(2)}")
            time.sleep(max(0.0, args.fill_hold_s - 2))
            (disk / "filler").unlink()
        if now >= next_restart:
            agent.kill_and_restart()
            next_restart = now + args.restart_every_s
            sampled = False
        time.sleep(0.5)
    soak.stop.set()
    for thread in threads:
        thread.join(PROMPT_TIMEOUT_S)
    time.sleep(3)
    agent.stop()
    return report(args, agent, soak, data_dir, outside, time.monotonic() - t0)


def report(args, agent, soak: Soak, data_dir: Path, outside, elapsed: float) -> int:
    stored = {s.id: s for s in harness.sessions_in(data_dir).values()}
    typed = stored_total = missing = duplicated = 0
    problems: list[str] = list(soak.errors)
    for session in soak.sessions:
        got = [r["command"] for r in harness.export(data_dir, "--session", session.tag)]
        typed += len(session.typed)
        stored_total += len(got)
        duplicated += sum(
            max(0, got.count(c) - session.typed.count(c)) for c in set(got)
        )
        lost = [c for c in session.typed if c not in got]
        missing += len(lost)
        if got != session.typed:
            problems.append(
                f"{session.tag} ({session.kind}): typed {len(session.typed)}, stored "
                f"{len(got)}; first missing {lost[:1]}"
            )
        ended = stored.get(session.tag)
        cut_by_mode = ended is not None and ended.status == "terminated"
        if session.broken and not cut_by_mode:
            problems.append(f"{session.tag} ({session.kind}) stopped: {session.broken}")
    cut = [s for s in stored.values() if s.status == "terminated"]
    steady = [rss for at, rss in agent.rss_at_age if at >= args.steady_after_s]
    print(
        f"soak: {elapsed / 60:.1f} min, {len(soak.sessions)} sessions, "
        f"{agent.restarts} kill -9 and restarts"
    )
    print(
        f"commands typed {typed}, stored {stored_total}, missing {missing}, "
        f"duplicated {duplicated}"
    )
    for s in sorted(cut, key=lambda s: s.id):
        print(f"cut by the mode: {s.id}: {s.end_reason}")
    print(f"refused while the disk was below its reserve: {len(soak.refused)}")
    runs = ", ".join(
        f"{at / 60:.1f}m: {rss / 1e6:.1f} MB" for at, rss in agent.rss_at_age
    )
    print(f"agent RSS at {args.restart_every_s * 0.8:.0f} s of each run: {runs}")
    if len(steady) >= 2:
        print(
            f"RSS after minute {args.steady_after_s / 60:.0f}: min "
            f"{min(steady) / 1e6:.1f} MB, max {max(steady) / 1e6:.1f} MB, "
            f"max/min {max(steady) / min(steady):.2f}"
        )
    print(f"files held open for writing outside DATA_DIR: {len(outside)}")
    for path in sorted(outside):
        print(f"  {path}")
    for problem in problems:
        print(f"problem: {problem}")
    flood = [s for s in soak.sessions if s.kind == "flood"]
    flood_cut = all(
        stored.get(s.tag) and stored[s.tag].status == "terminated" for s in flood
    )
    ok = not problems and not outside and flood_cut and len(soak.refused) == 1
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--restart-every-s", type=float, default=180.0)
    parser.add_argument("--flood-at-s", type=float, default=120.0)
    parser.add_argument("--fill-at-s", type=float, default=600.0)
    parser.add_argument("--fill-hold-s", type=float, default=30.0)
    parser.add_argument("--steady-after-s", type=float, default=300.0)
    parser.add_argument("--disk-mib", type=int, default=512)
    parser.add_argument("--reserve-mib", type=int, default=64)
    parser.add_argument("--log-max-mib", type=int, default=128)
    parser.add_argument("--cat-mib", type=int, default=3, help="the file cat reads")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.soak: must run as root (strace, sshd, a tmpfs, a test user)")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
