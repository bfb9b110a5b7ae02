"""Progress a person can read in a terminal or a CI log: one plain line per cell as its verdict is known, with
``[k/N]``, the time since the env's run started and an estimate of what is left.

The estimate counts only cells that were computed (a kept result costs nothing and would make the rate a lie).
``nox -s matrix`` runs one process per env; when it says which env of how many this is and when the whole matrix
started (``YOLOV5_MATRIX_PROGRESS="<started epoch> <k>/<n>"``), the line also estimates the whole matrix.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from harness.results.model import CellResult

OUTER_ENV = "YOLOV5_MATRIX_PROGRESS"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 12 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def outer_from_env(value: str | None = None) -> tuple[float, int, int] | None:
    """(started, k, n) from ``YOLOV5_MATRIX_PROGRESS``; None when unset or malformed (progress is never fatal)."""
    text = os.environ.get(OUTER_ENV, "") if value is None else value
    try:
        started, position = text.split()
        k, n = (int(x) for x in position.split("/"))
        return (float(started), k, n) if 1 <= k <= n else None
    except ValueError:
        return None


class Progress:
    """Counts the cells of one env run and writes a line for each."""

    def __init__(self, label: str, total: int, log: Callable[[str], None],
                 outer: tuple[float, int, int] | None = None, clock: Callable[[], float] = time.time):
        self.label, self.total, self.log, self.outer, self.clock = label, total, log, outer, clock
        self.started = clock()
        self.done = 0
        self.kept = 0
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def cell(self, result: CellResult, kept: bool = False) -> None:
        """Log one finished cell (once): its verdict, the count, elapsed time and what is left."""
        with self.lock:
            if result.cell in self.seen:
                return
            self.seen.add(result.cell)
            self.done += 1
            self.kept += kept
            line = (f"[{self.label}] [{self.done}/{self.total}] {result.ref} variant {result.variant} "
                    f"{result.format}{' [stand-in]' if result.standin else ''}: "
                    f"{'unchanged, kept (' + result.verdict + ')' if kept else result.verdict}")
            if result.checkpoint:  # how the harness built its own checkpoint: not the export's story, but seen
                line += f" [checkpoint built with {result.checkpoint.built_with}]"
            if not kept:
                message = result.deciding.message
                line += f" — {message[:160]}" if message else ""
            self.log(f"{line} · {self.timing()}")

    def timing(self) -> str:
        elapsed = self.clock() - self.started
        computed = self.done - self.kept
        left = self.total - self.done
        text = f"{duration(elapsed)} elapsed"
        if computed and left:
            text += f", about {duration(elapsed / computed * left)} left"
        if self.outer:
            started, k, n = self.outer
            fraction = (k - 1 + self.done / max(1, self.total)) / n
            whole = self.clock() - started
            if 0 < fraction < 1 and computed:
                text += f"; matrix env {k}/{n}, about {duration(whole / fraction - whole)} left in all"
        return text
