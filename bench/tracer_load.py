"""Live sessions for bench/tracer.py: opened, typed into, measured, closed.

`LiveSessions` opens N tagged sessions at once and keeps their ptys drained;
`measure()` takes the CPU time of the agent, the ssh clients and their
straces over a window, idle or typing (a command into every session every
`period_s`), with Enter to feed for every typed command (from the write of
`echo ...\\r` to the command readable through agent/reader.py).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from agent.reader import StoreFollower, load
from tests import harness

PROMPT_TIMEOUT_S = 180
FEED_POLL_S = 0.005


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def tagged(user: harness.TestUser, server: harness.Sshd, tag: str) -> list[str]:
    return harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def thread_cpu_s(pid: int) -> Counter[str]:
    """CPU seconds of each of a process's threads so far, by thread name.

    The agent names its threads (tracer/procfs.py: name_threads); those of
    one name (the launchers) add up. A thread that ended is not counted.
    """
    tick = os.sysconf("SC_CLK_TCK")
    by_name: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        by_name[name.rstrip("0123456789-") or name] += (
            int(fields[11]) + int(fields[12])
        ) / tick
    return by_name


@dataclass
class Window:
    """What one measuring window saw."""

    seconds: float
    agent_cpu_s: float
    ssh_cpu_s: float
    strace_cpu_s: float
    agent_rss_mb: float
    typed: int = 0
    feed_s: list[float] = field(default_factory=list)
    threads: Counter[str] = field(default_factory=Counter)  # the agent's CPU s

    def share(self, cpu: float) -> float:
        return 100.0 * cpu / self.seconds


class LiveSessions:
    """N tagged sessions, open at once, traced, their output drained."""

    def __init__(
        self, user: harness.TestUser, server: harness.Sshd, prefix: str, count: int
    ) -> None:
        self.tags = [f"{prefix}{n}" for n in range(count)]
        self.children = []
        for tag in self.tags:
            child = harness.spawn_ssh(tagged(user, server, tag))
            child.delaybeforesend = None
            self.children.append(child)
        for child in self.children:
            child.expect(harness.PROMPT, timeout=PROMPT_TIMEOUT_S)
        self.ssh = [psutil.Process(harness.ssh_pid_of(c)) for c in self.children]
        harness.wait_for(
            lambda: all(harness.is_traced(p.pid) for p in self.ssh), timeout=60
        )
        self.straces = [
            psutil.Process(pid)
            for p in self.ssh
            for pid in harness.strace_processes_for(p.pid)
        ]
        self.typed: dict[str, list[str]] = {tag: [] for tag in self.tags}
        self._fds = {c.child_fd: c for c in self.children}

    def drain(self, timeout: float) -> None:
        ready, _, _ = select.select(list(self._fds), [], [], timeout)
        for fd in ready:
            try:
                os.read(fd, 1 << 16)
            except OSError:
                self._fds.pop(fd, None)

    def measure(
        self,
        agent: psutil.Process,
        data_dir: Path,
        seconds: float,
        period_s: float | None,
    ) -> Window:
        """CPU over `seconds`; typing into each session every `period_s` if set."""
        follower = StoreFollower(data_dir)
        follower.poll()
        sent: dict[str, float] = {}
        feed: list[float] = []
        groups = [self.agent_procs(agent), self.ssh, self.straces]
        before = [cpu_s(g) for g in groups]
        threads_before = thread_cpu_s(agent.pid)
        t0 = time.monotonic()
        next_send = t0
        n = 0
        k = 0
        while (now := time.monotonic()) - t0 < seconds:
            if period_s is not None and now >= next_send:
                index = n % len(self.children)
                tag = self.tags[index]
                command = f"echo {tag}-{k}"
                self.children[index].send(command.encode() + b"\r")
                sent[command] = time.perf_counter()
                self.typed[tag].append(command)
                n += 1
                if index == len(self.children) - 1:
                    k += 1
                next_send = t0 + n * period_s / len(self.children)
            self.drain(FEED_POLL_S)
            stamp = time.perf_counter()
            for stored in follower.poll():
                if stored.command in sent:
                    feed.append(stamp - sent.pop(stored.command))
        elapsed = time.monotonic() - t0
        after = [cpu_s(g) for g in groups]
        threads = thread_cpu_s(agent.pid)
        threads.subtract(threads_before)
        return Window(
            elapsed,
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
            agent.memory_info().rss / 2**20,
            n,
            feed,
            +threads,  # those that ran
        )

    @staticmethod
    def agent_procs(agent: psutil.Process) -> list[psutil.Process]:
        return [agent]  # all its threads; its trackers become the straces

    def check_stored(self, data_dir: Path, timeout: float = 60.0) -> tuple[int, int]:
        """(missing, duplicated) commands over all sessions, once settled."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain(0.05)
            stored: dict[str, Counter[str]] = {tag: Counter() for tag in self.tags}
            for command in load(data_dir).commands:
                if command.session in stored:
                    stored[command.session][command.command] += 1
            missing = sum(
                1
                for tag, typed in self.typed.items()
                for command in typed
                if stored[tag][command] == 0
            )
            dupes = sum(
                c - 1 for counts in stored.values() for c in counts.values() if c > 1
            )
            if missing == 0 or time.monotonic() > deadline:
                return missing, dupes
            time.sleep(0.5)

    def close(self) -> None:
        for child in self.children:
            with contextlib.suppress(OSError):
                child.sendeof()
        for child in self.children:
            child.close(force=True)


def burst(
    user: harness.TestUser, server: harness.Sshd, data_dir: Path, count: int
) -> dict[str, object]:
    """`count` sessions started at once: attach from each one's spawn.

    A thread watches every ssh already spawned while the next ones are being
    spawned (spawning 50 takes a while itself).
    """
    spawned: dict[int, float] = {}  # ssh pid -> when its spawn began
    traced: dict[int, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with lock:
                waiting = [p for p in spawned if p not in traced]
            for pid in waiting:
                with contextlib.suppress(OSError):
                    if harness.is_traced(pid):
                        traced[pid] = time.perf_counter() - spawned[pid]
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    children = []
    try:
        for n in range(count):
            t0 = time.perf_counter()
            child = harness.spawn_ssh(tagged(user, server, f"burst{n}"))
            child.delaybeforesend = None
            children.append(child)
            with lock:
                spawned[child.pid] = t0
        deadline = time.monotonic() + 60
        while len(traced) < count and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        watcher.join()
    for child in children:
        child.expect(harness.PROMPT, timeout=PROMPT_TIMEOUT_S)
    for n, child in enumerate(children):
        child.send(f"echo burst-{n}\r".encode())
    for child in children:
        child.expect(harness.PROMPT, timeout=PROMPT_TIMEOUT_S)
        child.sendeof()
    for child in children:
        child.close()
    missed = 0
    for n in range(count):
        try:
            harness.wait_for(
                lambda n=n: (
                    [
                        r["command"]
                        for r in harness.export(data_dir, "--session", f"burst{n}")
                    ]
                    == [f"echo burst-{n}"]
                ),
                timeout=60,
            )
        except TimeoutError:
            missed += 1
    sessions = harness.sessions_in(data_dir)
    ended = sum(
        1
        for n in range(count)
        if (s := sessions.get(f"burst{n}")) is not None and s.status == "terminated"
    )
    return {"attach": list(traced.values()), "untraced": count - len(traced),
            "missed": missed, "ended": ended}  # fmt: skip
