"""Column widths for the terminal views: what shrinks first, what never does.

audit-tail and audit-sessions lay their rows out for the width they have.
Each column says how wide its widest cell is, how narrow it may wrap, and
when its turn to shrink comes; the free text (a command, "who") is last, and
wraps instead of being dropped. Ids are never cut: a column that holds them
wraps them whole below its natural width only when nothing else is left.
Pure: widths in, widths out.
"""

from __future__ import annotations

from dataclasses import dataclass

# From this width on, times are shown in full (ISO 8601, UTC); narrower, as
# HH:MM:SS under a line that names the day.
FULL_TIME_MIN_WIDTH = 120
CLOCK_WIDTH = 8  # HH:MM:SS
FULL_TIME_WIDTH = 24  # 2027-01-15T08:00:11.000Z


@dataclass(frozen=True, slots=True)
class Column:
    natural: int  # the widest cell (or the header)
    minimum: int  # it may wrap down to this
    order: int  # who shrinks first: lowest; the free text has the highest


def fit(
    columns: list[Column], width: int, gap: int = 1, fill: bool = True
) -> list[int]:
    """Widths within `width`, shrinking columns by their order.

    Each column shrinks from its natural width to its minimum before the next
    in order is touched. The last in order (the free text) takes what is
    left (with `fill`, more than its natural width if there is room), and if
    even the minimums do not fit, what is left down to one cell.
    """
    widths = [max(1, c.natural) for c in columns]
    excess = sum(widths) + gap * (len(columns) - 1) - width
    order = sorted(range(len(columns)), key=lambda i: columns[i].order)
    for i in order[:-1]:
        if excess <= 0:
            break
        take = min(excess, widths[i] - min(widths[i], columns[i].minimum))
        widths[i] -= take
        excess -= take
    if excess > 0 or fill:
        widths[order[-1]] = max(1, widths[order[-1]] - excess)
    return widths


def share(natural: int, width: int, minimum: int, fraction: float) -> int:
    """What the free text asks for: its widest cell, but no more than a share.

    Past that share the other columns keep their natural widths and the free
    text wraps (fit() still gives it all the room that is left).
    """
    return min(natural, max(minimum, int(width * fraction)))


def full_times(width: int) -> bool:
    return width >= FULL_TIME_MIN_WIDTH


def time_cell(iso_time: str, width: int) -> str:
    """`2027-01-15T08:00:11.000Z` in full on a wide terminal, else `08:00:11`."""
    return iso_time if full_times(width) else iso_time[11:19]


def day_of(iso_time: str) -> str:
    return iso_time[:10]


def runs_by_day(times: list[str]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive ISO times on the same day."""
    runs: list[tuple[int, int]] = []
    start = 0
    for end in range(1, len(times) + 1):
        if end == len(times) or day_of(times[end]) != day_of(times[start]):
            runs.append((start, end))
            start = end
    return runs
