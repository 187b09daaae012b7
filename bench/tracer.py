"""The tracer's numbers: attach latency, bursts, Enter to feed, CPU, memory.

    sudo .venv/bin/python -m bench.tracer [--sessions 30] [--burst 50]
        [--commands 100] [--idle-s 60] [--live 100] [--cpu 1,20,100]
        [--cpu-s 20] [--period-s 0.5]

One run, one throwaway sshd and user, the agent with its defaults (process
events from the kernel where it may listen), everything measured side by side:

- attach: from just before a tagged ssh is started to strace attached
  (TracerPid set), beside the time ssh takes to connect (first byte of the
  remote session on the client); keys typed at once, before ssh connected,
  must all be recorded (keystrokes missed: must be 0);
- burst: that many tagged sessions started at once, every one traced and its
  command recorded;
- Enter to feed: from the Enter key to the command readable by the readers
  audit-export and audit-tail use (agent/reader.py), polled every 2 ms;
- idle: the agent's CPU over a quiet period, in % of one core;
- memory: the agent's RSS with that many live traced sessions, beside idle;
- CPU with live sessions (bench/tracer_load.py): for each of --cpu, that
  many sessions open, idle and then typing (a command into each every
  --period-s): the agent's CPU in % of a core and as a ratio to the ssh
  clients' CPU, the straces' CPU, the agent's RSS, Enter to feed for every
  typed command, and every typed command stored exactly once.
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
from bench.tracer_load import LiveSessions, Window, pct, tagged
from bench.tracer_load import burst as burst_from_spawn
from tests import harness

PROMPT_TIMEOUT_S = 120


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
        child.delaybeforesend = None  # pexpect sleeps 50 ms before each send
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


def enter_to_feed(user, server, data_dir: Path, count: int) -> list[float]:
    child = harness.spawn_ssh(tagged(user, server, "feed"))
    # pexpect sleeps 50 ms before each send by default: that is no part of
    # Enter to feed (figures before this fix include it).
    child.delaybeforesend = None
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


def cpu_with_sessions(
    user, server, data_dir: Path, agent: psutil.Process, sizes, seconds, period_s
) -> list[tuple[int, str, Window, tuple[int, int]]]:
    rows = []
    for size in sizes:
        live = LiveSessions(user, server, f"cpu{size}-", size)
        try:
            time.sleep(2.0)  # the logins' own output is read
            idle = live.measure(agent, data_dir, seconds, None)
            rows.append((size, "idle", idle, (0, 0)))
            typing = live.measure(agent, data_dir, seconds, period_s)
            rows.append((size, "typing", typing, live.check_stored(data_dir)))
        finally:
            live.close()
        time.sleep(2.0)  # their ends are stored
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--live", type=int, default=100)
    parser.add_argument("--cpu", default="1,20,100")
    parser.add_argument("--cpu-s", type=float, default=20.0)
    parser.add_argument("--period-s", type=float, default=0.5)
    parser.add_argument("--only", default="", help="cpu,attach,burst,feed,memory")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set()
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

            def want(name: str) -> bool:
                return not only or name in only

            try:
                idle = cpu_percent(proc, args.idle_s) if want("idle") else None
                att = (
                    attach_latencies(user, server, data_dir, args.sessions)
                    if want("attach")
                    else None
                )
                bur = (
                    burst_from_spawn(user, server, data_dir, args.burst)
                    if want("burst")
                    else None
                )
                feed = (
                    enter_to_feed(user, server, data_dir, args.commands)
                    if want("feed")
                    else None
                )
                cpu = (
                    cpu_with_sessions(
                        user,
                        server,
                        data_dir,
                        proc,
                        [int(n) for n in args.cpu.split(",")],
                        args.cpu_s,
                        args.period_s,
                    )
                    if want("cpu")
                    else []
                )
                mem = memory(user, server, proc, args.live) if want("memory") else None
            except Exception:
                print(agent.log_text()[-3000:], file=sys.stderr)
                raise
    report(args, idle, att, bur, feed, cpu, mem)
    return 0


def report(args, idle, att, bur, feed, cpu, mem) -> None:
    ms = 1e3
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores shared)")
    if att is not None:
        print(f"attach, {args.sessions} sessions one after another:")
        for name in ("attach", "connect", "margin"):
            v = att[name]
            print(
                f"  {name:<8} p50 {pct(v, 0.5) * ms:7.1f} ms"
                f"  p95 {pct(v, 0.95) * ms:7.1f} ms"
                f"  max {max(v) * ms:7.1f} ms  min {min(v) * ms:7.1f} ms"
            )
        print(
            f"  keys typed before ssh connected, missed: {att['missed']}"
            f" of {args.sessions}"
        )
    if bur is not None:
        b = bur["attach"]
        print(
            f"burst of {args.burst}, attach from each one's spawn: p50"
            f" {pct(b, 0.5) * ms:.0f} ms, p95 {pct(b, 0.95) * ms:.0f} ms, max"
            f" {max(b) * ms:.0f} ms; untraced {bur['untraced']}, ended"
            f" {bur['ended']}, commands missed {bur['missed']} of {args.burst}"
        )
    if feed is not None:
        print(
            f"Enter to feed, one session, {args.commands} commands: p50"
            f" {pct(feed, 0.5) * ms:.0f} ms, p95 {pct(feed, 0.95) * ms:.0f} ms,"
            f" max {max(feed) * ms:.0f} ms"
        )
    if idle is not None:
        print(f"idle CPU over {args.idle_s:.0f} s, no session: {idle:.2f}% of one core")
    if cpu:
        print(
            f"CPU with live sessions, {args.cpu_s:.0f} s windows, typing = a command"
            f" into each session every {args.period_s} s (% of one core):"
        )
        print(
            f"  {'sessions':>8} {'':<6} {'agent':>7} {'ssh':>7} {'agent/ssh':>9}"
            f" {'strace':>7} {'RSS MB':>7} {'typed':>6} {'feed p50':>9}"
            f" {'feed p95':>9} {'missing':>7} {'dupes':>5}"
        )
        for size, kind, w, (missing, dupes) in cpu:
            ratio = w.agent_cpu_s / w.ssh_cpu_s if w.ssh_cpu_s else float("nan")
            print(
                f"  {size:>8} {kind:<6} {w.share(w.agent_cpu_s):>7.2f}"
                f" {w.share(w.ssh_cpu_s):>7.2f} {ratio:>9.2f}"
                f" {w.share(w.strace_cpu_s):>7.2f} {w.agent_rss_mb:>7.1f}"
                f" {w.typed:>6} {pct(w.feed_s, 0.5) * ms:>9.0f}"
                f" {pct(w.feed_s, 0.95) * ms:>9.0f} {missing:>7} {dupes:>5}"
            )
        print("  the agent's CPU by thread (% of one core), typing:")
        for size, kind, w, _ in cpu:
            if kind == "typing":
                busiest = w.threads.most_common(5)
                shares = ", ".join(f"{n} {w.share(c):.2f}" for n, c in busiest)
                print(f"  {size:>8} typing  {shares}")
    if mem is not None:
        print(
            f"memory: agent RSS idle {mem['idle_mb']:.1f} MB, with {args.live} live"
            f" sessions {mem['live_mb']:.1f} MB ({mem['fds']} fds); {mem['straces']}"
            f" straces {mem['strace_mb']:.1f} MB in all"
        )


if __name__ == "__main__":
    sys.exit(main())
