"""Cross-process locks on the shared cache, so two runs at once (two nox sessions, two CI jobs on one cache) never
build the same venv, checkpoint or patched tree, or write the same work directory, at the same time.

``flock`` on a file under ``<cache>/locks``: the kernel drops the lock when its holder dies (SIGKILL included), so a
killed run never leaves a stale lock behind, and two threads of one run exclude each other too (each ``open`` is its
own lock). Lock files are never deleted: deleting one while another process waits on it would let a third take a
fresh file. A run that has to wait says so, naming what it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.envs import proc

LOCKS_DIR = "locks"
POLL = 0.2  # seconds between attempts: a blocking flock could not notice an interrupt


def lock_path(cache: Path, *parts: str) -> Path:
    """``<cache>/locks/<readable-name>-<hash>.lock`` for the resource named by ``parts``."""
    name = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p)[:40] for p in parts)
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    return cache / LOCKS_DIR / f"{name}-{digest}.lock"


@contextlib.contextmanager
def hold(path: Path, what: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock ``path`` for the block; wait for another run holding it (saying so once).

    Args:
        path: the lock file (created if missing).
        what: the resource, for the waiting message ("env py311-torch2.14", "v7.0 variant 1").
        log: where to say that this run waits; None waits silently.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while not _try(fd):
            proc.check_interrupt(f"while waiting for {what}")  # interrupted while waiting: nothing to undo
            if log:
                log(f"waiting for another run that holds {what} (lock {path})")
                log = None
            time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious human
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def is_held(path: Path) -> bool:
    """True when some process holds ``path`` now (a test and diagnostics helper; racy by nature)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
