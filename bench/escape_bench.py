"""What escaping stored text costs audit-export: 1M commands, with it and without.

The real write_records() of audit-export formats the same rows twice per
round, once as it ships and once with agent/escape.py's checks replaced by
the identity (what exports did before, issue 14 finding 8; the one
isprintable() per command stays), side by side; the best of each is compared. Commands are plain ASCII, the common case,
plus one in a thousand with a control character or a formula.

    .venv/bin/python -m bench.escape_bench [--commands 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

import agent.export_record as export_record
import agent.tools.export as export
from agent.export_record import Stamp
from agent.records import Command, Session, iso
from bench.store_bench import COMMANDS_PER_SESSION, session


def rows(total: int) -> list[tuple[Command, Session | None]]:
    out: list[tuple[Command, Session | None]] = []
    for n in range(total):
        s = session(n // COMMANDS_PER_SESSION)
        text = f"ls -l /srv/data/{n} | grep -v tmp"
        if n % 1000 == 0:
            text = "=cmd|' /C calc'!A0" if n % 2000 else f"printf '\x1b]0;{n}\x07'"
        out.append((Command(s.id, n % COMMANDS_PER_SESSION + 1, iso(n), text), s))
    return out


@contextlib.contextmanager
def unescaped() -> Iterator[None]:
    """The exports as they were: no escaping of what users typed."""
    patches: tuple[tuple[object, str, object], ...] = (
        (export, "csv_cell", _same),
        (export, "FORMULA_START", frozenset()),
        (export_record, "json_text", _same),
    )
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _same(text: str) -> str:
    return text


def seconds(data: list[tuple[Command, Session | None]], fmt: str) -> float:
    with open(os.devnull, "w") as out:
        t0 = time.perf_counter()
        # No risk rules: only the escaping differs between the two runs.
        export.write_records(iter(data), out, fmt, Stamp("bench", ()))
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = rows(args.commands)
    best: dict[tuple[str, bool], float] = {}
    for _ in range(args.rounds):
        for fmt in ("json", "jsonl", "csv"):
            for escaped in (False, True):
                with contextlib.nullcontext() if escaped else unescaped():
                    took = seconds(data, fmt)
                key = (fmt, escaped)
                best[key] = min(best.get(key, took), took)
    print(f"{args.commands} commands, best of {args.rounds} rounds")
    print(f"{'format':>7} {'plain s':>8} {'escaped s':>10} {'escaped/plain':>14}")
    for fmt in ("json", "jsonl", "csv"):
        plain, with_it = best[(fmt, False)], best[(fmt, True)]
        print(f"{fmt:>7} {plain:>8.2f} {with_it:>10.2f} {with_it / plain:>14.2f}")


if __name__ == "__main__":
    main()
