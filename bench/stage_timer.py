"""CPU time by pipeline stage inside a running agent, for bench/ingest_stages.py.

Installed into the agent process by bench/stage_hook/sitecustomize.py when
BENCH_STAGES_OUT names a file: each stage's method is wrapped to add the
thread CPU time it used, minus that of the stages it called (so every
nanosecond is counted once, in the innermost stage), per thread. The totals,
with each thread's CPU clock read at the same moment, go to that file as
JSON every DUMP_S, replaced whole.

Why not a sampling profiler: py-spy at 200 Hz over 30 s of 20 typing
sessions took about 200 samples of the ingest thread (it runs about 6 % of
the time), and attributed 8 % of it to `iso()`, a 4 µs call made once a
command: too few samples, from a thread that is mostly asleep.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DUMP_S = 0.5

# (module, class, method, stage): the agent's ingest path, outermost first.
STAGES = (
    ("agent.daemon.log_watch", "LogWatch", "read", "inotify events read"),
    ("agent.daemon.ingest", "Ingest", "process", "a log's round (the rest)"),
    ("agent.daemon.follower", "LogFollower", "read", "log read, strace lines"),
    ("agent.daemon.follower", "LogFollower", "apply", "events to commands (rest)"),
    ("parsers.pipeline", "CommandPipeline", "feed", "terminal emulation, commands"),
    ("agent.daemon.recorder", "Recorder", "event", "recording: events"),
    ("agent.daemon.recorder", "Recorder", "commit", "recording: commit, state"),
    ("agent.daemon.ingest", "Ingest", "_submit", "submit to the store"),
    ("agent.daemon.store", "Store", "flush", "store flush (the rest)"),
    ("agent.records", "Session", "to_document", "store: session documents"),
    ("agent.daemon.signer", "Chain", "link", "store: chain links"),
    ("agent.daemon.shard_file", "ShardFile", "append", "store: shard append"),
    ("agent.daemon.shard_file", "ShardFile", "update", "store: shard update"),
    ("agent.daemon.shard_file", "ShardFile", "flush", "store: shard encode"),
    ("agent.daemon.shard_file", None, "write_atomic", "store: shard file write"),
    ("agent.files", "os", "fsync", "store: fsync"),
    ("agent.daemon.reclaim", "Reclaimer", "run", "housekeeping: reclaim"),
    ("agent.daemon.ingest", "Ingest", "_delete_ingested", "housekeeping: expiry"),
)

_totals: dict[str, list[int]] = {}  # "stage@thread" -> [ns, calls]
_lock = threading.Lock()
_local = threading.local()


def _timed(func: Callable[..., Any], stage: str) -> Callable[..., Any]:
    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        frame = [time.thread_time_ns(), 0]  # start, CPU of the stages it called
        stack.append(frame)
        try:
            return func(*args, **kwargs)
        finally:
            stack.pop()
            spent = time.thread_time_ns() - frame[0]
            if stack:
                stack[-1][1] += spent
            key = f"{stage}@{threading.current_thread().name}"
            with _lock:
                total = _totals.setdefault(key, [0, 0])
                total[0] += spent - frame[1]
                total[1] += 1

    return timed


def install(out: Path) -> None:
    for module_name, owner, name, stage in STAGES:
        module = importlib.import_module(module_name)
        if owner is None:
            setattr(module, name, _timed(getattr(module, name), stage))
        elif owner == "os":  # only this module's calls: its own proxy of os
            proxy = module.os
            if proxy is os:
                proxy = module.os = type(os)("os")  # type: ignore[attr-defined]
                proxy.__dict__.update(os.__dict__)
            setattr(proxy, name, _timed(getattr(os, name), stage))
        else:
            cls = getattr(module, owner)
            setattr(cls, name, _timed(getattr(cls, name), stage))
    # A daemon: the hook owns nothing of the agent's, and this thread lives
    # exactly as long as the process it measures.
    threading.Thread(target=_dump, args=(out,), name="stage-timer", daemon=True).start()


def _dump(out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    while True:
        time.sleep(DUMP_S)
        with _lock:  # the stages and the threads' clocks at one moment
            threads = {}
            for thread in threading.enumerate():
                with contextlib.suppress(OSError, TypeError):  # gone, or not started
                    clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]
                    threads[thread.name] = time.clock_gettime_ns(clock)
            text = json.dumps(
                {"at": time.monotonic(), "threads": threads, "stages": _totals}
            )
        with contextlib.suppress(OSError):
            tmp.write_text(text)
            tmp.replace(out)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the agent last wrote: when, its threads' CPU, the stages' totals."""

    at: float  # time.monotonic() in the agent
    threads: dict[str, int]  # thread name -> CPU ns
    stages: dict[str, tuple[int, int]]  # stage@thread -> (CPU ns, calls)


def read(out: Path) -> Snapshot:
    doc = json.loads(out.read_text())
    return Snapshot(
        doc["at"],
        doc["threads"],
        {k: (v[0], v[1]) for k, v in doc["stages"].items()},
    )
