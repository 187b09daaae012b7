"""The tracer's numbers: attach latency, bursts, Enter to feed, idle cost, memory.

    sudo .venv/bin/python -m bench.tracer [--sessions 30] [--burst 50]
                                          [--commands 100] [--idle-s 60] [--live 100]

One run, one throwaway sshd and user, the agent at its default poll interval
(0.1 s), everything measured side by side:

- attach: from just before a tagged ssh is started to strace attached
  (TracerPid set), beside the time ssh takes to connect (first byte of the
  remote session on the client); keys typed at once, before ssh connected,
  must all be recorded (keystrokes missed: must be 0);
- burst: that many tagged sessions started at once, every one traced and its
  command recorded;
- Enter to feed: from the Enter key to the command readable by the readers
  audit-export and audit-tail use (agent/reader.py), polled every 2 ms;
- idle: the agent's CPU over a quiet period, in % of one core;
- memory: the agent's RSS with that many live traced sessions, beside idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from agent.reader import StoreFollower
from tests import harness

PROMPT_TIMEOUT_S = 120


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def tagged(user: harness.TestUser, server: harness.Sshd, tag: str) -> list[str]:
    return harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")


def wait_traced(pid: int, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if harness.is_traced(pid):
            return time.perf_counter()
        time.sleep(0.001)
    raise TimeoutError(f"ssh {pid} never traced")


def attach_latencies(user, server, data_dir: Path, count: int) -> dict[str, object]:
    attach, connect, margin = [], [], []
    tags = []
    for n in range(count):
        tag = f"attach{n}"
        t0 = time.perf_counter()
        child = harness.spawn_ssh(tagged(user, server, tag))
        # Typed before ssh even connected: sits in the tty until ssh reads it.
        child.send(f"echo early-{n}\r".encode())
        pid = harness.ssh_pid_of(child)
        t_attach = wait_traced(pid)
        # The remote shell is ready: bash's readline switches bracketed paste
        # on (ESC[?2004h) before its first prompt.
        child.expect(rb"\x1b\[\?2004h", timeout=PROMPT_TIMEOUT_S)
        t_connect = time.perf_counter()
        attach.append(t_attach - t0)
        connect.append(t_connect - t0)
        margin.append(t_connect - t_attach)
        child.expect(f"early-{n}\r\n".encode(), timeout=PROMPT_TIMEOUT_S)
        child.expect(harness.PROMPT)
        child.sendeof()
        child.close()
        tags.append(tag)
    missed = 0
    for n, tag in enumerate(tags):
        try:
            harness.wait_for(
                lambda t=tag, n=n: (
                    [r["command"] for r in harness.export(data_dir, "--session", t)]
                    == [f"echo early-{n}"]
                ),
                timeout=30,
            )
        except TimeoutError:
            missed += 1
    return {"attach": attach, "connect": connect, "margin": margin, "missed": missed}


def burst(user, server, data_dir: Path, count: int) -> dict[str, object]:
    t0 = time.perf_counter()
    children = [
        harness.spawn_ssh(tagged(user, server, f"burst{n}")) for n in range(count)
    ]
    pids = [harness.ssh_pid_of(c) for c in children]
    attach = [wait_traced(pid, timeout=60) - t0 for pid in pids]
    for child in children:
        child.expect(harness.PROMPT, timeout=PROMPT_TIMEOUT_S)
    for n, child in enumerate(children):
        child.send(f"echo burst-{n}\r".encode())
    for child in children:
        child.expect(harness.PROMPT, timeout=PROMPT_TIMEOUT_S)
        child.sendeof()
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
    return {"attach": attach, "missed": missed}


def enter_to_feed(user, server, data_dir: Path, count: int) -> list[float]:
    child = harness.spawn_ssh(tagged(user, server, "feed"))
    pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    wait_traced(pid)
    follower = StoreFollower(data_dir)
    follower.poll()
    delays = []
    for n in range(count):
        child.send(f"echo feed-{n}".encode())
        time.sleep(0.05)  # the echo is on screen; now the Enter
        t0 = time.perf_counter()
        child.send(b"\r")
        want = f"echo feed-{n}"
        while True:
            if any(c.command == want for c in follower.poll()):
                delays.append(time.perf_counter() - t0)
                break
            if time.perf_counter() - t0 > 10:
                raise TimeoutError(f"{want!r} never reached the store")
            time.sleep(0.002)
        child.expect(harness.PROMPT)
    child.sendeof()
    child.close()
    return delays


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    t0 = time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.monotonic() - t0)


def memory(user, server, agent_proc: psutil.Process, count: int) -> dict[str, float]:
    idle_rss = agent_proc.memory_info().rss
    children = []
    for n in range(count):
        child = harness.spawn_ssh(tagged(user, server, f"live{n}"))
        children.append(child)
    for child in children:
        child.expect(harness.PROMPT, timeout=PROMPT_TIMEOUT_S)
        wait_traced(harness.ssh_pid_of(child), timeout=60)
    time.sleep(2)
    live_rss = agent_proc.memory_info().rss
    straces = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "strace"]
    strace_rss = sum(p.memory_info().rss for p in straces)
    fds = agent_proc.num_fds()
    for child in children:
        child.sendeof()
        child.close()
    return {
        "idle_mb": idle_rss / 2**20,
        "live_mb": live_rss / 2**20,
        "straces": len(straces),
        "strace_mb": strace_rss / 2**20,
        "fds": fds,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--live", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("tracer: error: run as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tracer-bench.") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        data_dir = workdir / "data"
        with (
            harness.sshd(workdir) as server,
            harness.test_user(workdir, "trb") as user,
            harness.agent(data_dir, poll_interval=0.1) as agent,
        ):
            proc = psutil.Process(agent.process.pid)
            try:
                idle = cpu_percent(proc, args.idle_s)
                att = attach_latencies(user, server, data_dir, args.sessions)
                bur = burst(user, server, data_dir, args.burst)
                feed = enter_to_feed(user, server, data_dir, args.commands)
                mem = memory(user, server, proc, args.live)
            except Exception:
                print(agent.log_text()[-3000:], file=sys.stderr)
                raise
    ms = 1e3
    print(f"attach, {args.sessions} sessions one after another (poll interval 0.1 s):")
    for name in ("attach", "connect", "margin"):
        v = att[name]
        print(
            f"  {name:<8} p50 {pct(v, 0.5) * ms:7.1f} ms  p95 {pct(v, 0.95) * ms:7.1f} ms"
            f"  max {max(v) * ms:7.1f} ms  min {min(v) * ms:7.1f} ms"
        )
    print(
        f"  keys typed before ssh connected, missed: {att['missed']} of {args.sessions}"
    )
    b = bur["attach"]
    print(
        f"burst of {args.burst}: attach p50 {pct(b, 0.5) * ms:.0f} ms, p95 "
        f"{pct(b, 0.95) * ms:.0f} ms, max {max(b) * ms:.0f} ms; commands missed: "
        f"{bur['missed']} of {args.burst}"
    )
    print(
        f"Enter to feed over {args.commands} commands: p50 {pct(feed, 0.5) * ms:.0f} ms,"
        f" p95 {pct(feed, 0.95) * ms:.0f} ms, max {max(feed) * ms:.0f} ms"
    )
    print(f"idle CPU over {args.idle_s:.0f} s: {idle:.2f}% of one core")
    print(
        f"memory: agent RSS idle {mem['idle_mb']:.1f} MB, with {args.live} live sessions "
        f"{mem['live_mb']:.1f} MB ({mem['fds']} fds); {mem['straces']} straces "
        f"{mem['strace_mb']:.1f} MB in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
