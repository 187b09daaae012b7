"""Command rules: Enter to alert delivered, Enter to cut, matching cost.

    sudo .venv/bin/python -m bench.rules [--sessions 20] [--rounds 20]

With `--sessions` live traced sessions held open beside it (idle, as a busy
bastion has them), a session types a command an alert rule matches: from
its Enter key to the webhook receiver (on 127.0.0.1, started here) having
the POST; then sessions type a command a cut rule matches: from the Enter to
the ssh process gone. Then the matching cost per command with 200 rules,
for a short command and a 20 KB one, RE2 beside what Python's re costs on
the same patterns (side by side, one run). Figures, never assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import tempfile
import threading
import time
from pathlib import Path

import pexpect
import psutil

from agent.rules import Subject, parse_rules_file
from tests import harness


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def show(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name}: p50 {pct(ms, 0.5):.0f} ms, p95 {pct(ms, 0.95):.0f} ms, "
        f"max {max(ms):.0f} ms ({len(ms)} rounds)"
    )


class Receiver:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        times = self.times

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import json

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                times[body["record"]["command"]] = time.perf_counter()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()


def gone(proc: psutil.Process) -> None:
    """Until the process has exited (a zombie of pexpect's, never reaped here)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.002)
    raise TimeoutError(f"ssh {proc.pid} was not cut")


def traced(user: harness.TestUser, server: harness.Sshd, tag: str) -> object:
    child = harness.spawn_ssh(
        harness.ssh_argv(user, server, "-o", f"SetEnv=AUDIT_SESSION={tag}")
    )
    pid = harness.ssh_pid_of(child)
    child.expect(harness.PROMPT)
    harness.wait_for(lambda: harness.is_traced(pid), timeout=20)
    return child


def live_bench(sessions: int, rounds: int) -> None:
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="bench-rules.") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        rules = work / "rules.toml"
        rules.write_text(
            f'[alert]\nwebhook = "{receiver.url}"\n\n'
            '[[rule]]\nname = "alert-me"\npattern = "^echo alert-[0-9]+$"\n'
            'actions = ["alert"]\n\n'
            '[[rule]]\nname = "cut-me"\npattern = "^echo cut-[0-9]+$"\n'
            'actions = ["cut"]\n'
        )
        config = work / "agent.toml"
        config.write_text(f'rules_file = "{rules}"\nlocks_dir = "{work / "locks"}"\n')
        with (
            harness.test_user(work, prefix="brl") as user,
            harness.sshd(work) as server,
            harness.agent(work / "data", "--config", str(config)),
        ):
            idle = [traced(user, server, f"idle{n}") for n in range(sessions)]
            print(f"{sessions} live traced sessions held open")
            child = traced(user, server, "alerting")
            alerts = []
            for n in range(rounds):
                line = f"echo alert-{n}"
                child.send(line.encode())  # type: ignore[attr-defined]
                time.sleep(0.05)
                t0 = time.perf_counter()
                child.send(b"\r")  # type: ignore[attr-defined]
                harness.wait_for(lambda line=line: line in receiver.times, timeout=20)
                alerts.append(receiver.times[line] - t0)
                child.expect(harness.PROMPT)  # type: ignore[attr-defined]
            show("Enter to alert delivered", alerts)
            cuts = []
            for n in range(rounds):
                victim = traced(user, server, f"cut{n}")
                pid = harness.ssh_pid_of(victim)  # type: ignore[arg-type]
                proc = psutil.Process(pid)
                victim.send(f"echo cut-{n}".encode())  # type: ignore[attr-defined]
                time.sleep(0.05)
                t0 = time.perf_counter()
                victim.send(b"\r")  # type: ignore[attr-defined]
                gone(proc)
                cuts.append(time.perf_counter() - t0)
                victim.close()  # type: ignore[attr-defined]
            show("Enter to cut (ssh gone)", cuts)
            for c in idle:
                c.sendeof()  # type: ignore[attr-defined]
                with contextlib.suppress(pexpect.ExceptionPexpect):
                    c.close(force=True)  # type: ignore[attr-defined]
    receiver.server.shutdown()


def matching_bench() -> None:
    import re

    patterns = [rf"\bcmd{i}\s+--danger\b.*\|\s*sh{i}" for i in range(200)]
    rules = parse_rules_file(
        {"rule": [{"name": f"r{i}", "pattern": p, "actions": ["highlight"]}
                  for i, p in enumerate(patterns)]},
        "bench",
    )  # fmt: skip
    python = [re.compile(p) for p in patterns]
    texts = {
        "short command (15 B)": "ls -la /var/log",
        "20 KB command": ("cmd1 cmd2 --danger " * 1100)[:20000],
        "20 KB of one letter": "a" * 20000,
        "20 KB command one rule matches": ("cmd7 --danger " * 1400)[:19990] + "| sh7",
    }
    for name, text in texts.items():
        n = 200 if len(text) < 100 else 20
        t0 = time.perf_counter()
        for _ in range(n):
            rules.match(Subject(text))
        re2_ms = (time.perf_counter() - t0) / n * 1000
        t0 = time.perf_counter()
        for _ in range(max(1, n // 10)):
            for p in python:
                p.search(text)
        re_ms = (time.perf_counter() - t0) / max(1, n // 10) * 1000
        print(
            f"200 rules, {name}: {re2_ms:.2f} ms with RE2 (Python re: {re_ms:.2f} ms)"
        )
    hostile = r"\w+@\w+"
    text = "a" * 20000
    t0 = time.perf_counter()
    re.compile(hostile).search(text)
    slow = time.perf_counter() - t0
    one = parse_rules_file(
        {"rule": [{"name": "mail", "pattern": hostile, "actions": ["highlight"]}]}, "b"
    )
    t0 = time.perf_counter()
    one.match(Subject(text))
    fast = time.perf_counter() - t0
    print(
        f"one rule {hostile!r} on 20,000 letters: RE2 {fast * 1000:.2f} ms, "
        f"Python re {slow * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.rules")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--matching-only", action="store_true")
    args = parser.parse_args()
    matching_bench()
    if not args.matching_only:
        live_bench(args.sessions, args.rounds)
    print("(load average now:", " ".join(f"{x:.1f}" for x in psutil.getloadavg()), ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
