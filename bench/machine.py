"""How busy the whole machine was over a measurement, from ``/proc/stat``.

A row whose load generator, database and daemons share the machine can be
bounded by the machine rather than by the daemons: printed beside a scaling
ratio, the busy cores of each row say which one the ratio measured (a row
that kept every core busy measured the machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_STAT = Path("/proc/stat")


def cores() -> int:
    return os.cpu_count() or 1


def _times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every core since boot; None where there is no /proc/stat."""
    try:
        first = _STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def busy_cores(run: Callable[[], T]) -> tuple[T, float | None]:
    """``run()``'s result and how many cores the machine kept busy meanwhile (None: unknown)."""
    before = _times()
    result = run()
    after = _times()
    if before is None or after is None or after[1] <= before[1]:
        return result, None
    return result, (after[0] - before[0]) / (after[1] - before[1]) * cores()
