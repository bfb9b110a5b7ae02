"""The one door to subprocesses: every env-side step (worker job, a ref's exporter) runs through here.

A step runs in its own process group with a timeout, its combined output goes to a log file, and what comes back is
data (exit code, timed out, log tail): a crash or a hang in YOLOv5 code costs one step, never the
harness.

Two things stop a step besides its own end: its deadline (and a watchdog's), and, when ``[limits] memory_mb`` is set,
its resident memory: every poll sums the RSS of the step's process group from /proc, and a group over the limit is
killed and reported as "out of memory". (RLIMIT_AS would be simpler but caps address space, not memory: a CUDA build
of torch maps ~3.3 GB of it just to import, and fails to import under a 2 GB cap.) The check runs every poll, so a
step can overshoot by what it allocates in one poll interval. A run interrupted with Ctrl-C or SIGTERM sets ``STOP``:
every step in flight is killed at its next poll and raises ``Interrupted``, so no thread waits for a long export.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HARNESS_ROOT = Path(__file__).resolve().parent.parent
TAIL_LINES = 40
POLL = 0.25  # seconds between checks of a running step (deadline, watchdog, memory, interrupt)

# Set by a run from [limits] memory_mb (None: no limit); read by every poll of every step, one-shot or warm.
MEMORY_LIMIT_MB: float | None = None
# Set when the run is interrupted (Ctrl-C, SIGTERM): steps in flight are killed and raise Interrupted.
STOP = threading.Event()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Interrupted(KeyboardInterrupt):
    """The run was interrupted while this step ran; the step's process group is dead, its cell is not saved."""


def group_rss_mb(pgid: int) -> float:
    """Resident memory (MB) of every process in process group ``pgid``, from /proc (0 when none is left).

    Forked children count the pages they share with their parent too: RSS is what `top` shows per process.
    """
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the ")" closing the command name: state ppid pgrp ... ; rss (pages) is field 24 overall, 22 here.
        if int(fields[2]) == pgid:
            total += int(fields[21])
    return total * _PAGE / 2**20


def over_memory(pgid: int, limit_mb: float | None = None) -> str | None:
    """"out of memory: ..." when process group ``pgid`` holds more than ``limit_mb`` (default: MEMORY_LIMIT_MB)."""
    limit = MEMORY_LIMIT_MB if limit_mb is None else limit_mb
    if not limit:
        return None
    used = group_rss_mb(pgid)
    if used <= limit:
        return None
    return f"out of memory: {used:.0f} MB resident, over the {limit:.0f} MB limit ([limits] memory_mb)"


@dataclass
class ProcResult:
    argv: list[str]
    returncode: int | None
    timed_out: bool
    seconds: float
    log: Path
    killed_for: str | None = None  # why the harness killed it other than a deadline, e.g. "out of memory: ..."

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        return tail(self.text(), lines)

    def failure(self) -> str | None:
        """Why the process itself failed (out of memory, timeout, signal, exit code), or None when it exited 0."""
        if self.killed_for:
            return self.killed_for
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.returncode is not None and self.returncode < 0:
            return f"died with signal {signal.Signals(-self.returncode).name}"
        if self.returncode:
            return f"exit code {self.returncode}"
        return None


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def child_env(extra: dict[str, str] | None = None, pythonpath: str | None = None) -> dict[str, str]:
    """The environment for an env-side process: ours, minus what would make it slow or leak the harness's venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONPATH")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.update(extra or {})
    return env


def run_process(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path,
                watchdog: Callable[[], bool] | None = None) -> ProcResult:
    """Run ``argv`` to completion or timeout, output to ``log``; the whole process group dies on timeout, or as soon
    as ``watchdog()`` (polled twice a second) says the process overran a deadline of its own."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        killed_for = None
        try:
            while proc.poll() is None:
                if STOP.is_set():
                    raise Interrupted(f"interrupted: {argv[-1]}")
                killed_for = over_memory(proc.pid)
                if killed_for or time.monotonic() - start > timeout or (watchdog and watchdog()):
                    timed_out = not killed_for
                    kill_group(proc.pid)
                    proc.wait()
                    break
                time.sleep(POLL)
        except BaseException:  # Ctrl-C: take the child's group down with us, then let the interrupt through
            kill_group(proc.pid)
            proc.wait()
            raise
        if killed_for:
            fh.write(f"\nharness: killed the process group: {killed_for}\n")
    return ProcResult(argv, proc.returncode, timed_out, time.monotonic() - start, log, killed_for)


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group (the step and anything it started); quiet if it is gone already."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_worker(python: Path, job: dict[str, Any], *, workdir: Path, timeout: float,
               env_extra: dict[str, str] | None = None,
               watchdog: Callable[[], bool] | None = None) -> tuple[dict[str, Any] | None, ProcResult]:
    """Send one job to ``harness.worker`` in the env's interpreter; return its answer (None if it never answered)."""
    workdir.mkdir(parents=True, exist_ok=True)
    task = job["task"]
    out = workdir / f"{task}.answer.json"
    out.unlink(missing_ok=True)
    job_file = workdir / f"{task}.job.json"
    job_file.write_text(json.dumps({**job, "out": str(out)}, indent=1))
    result = run_process([str(python), "-m", "harness.worker", str(job_file)], cwd=workdir,
                         env=child_env(env_extra, pythonpath=str(HARNESS_ROOT)), timeout=timeout,
                         log=workdir / f"{task}.log", watchdog=watchdog)
    try:
        answer = json.loads(out.read_text()) if out.exists() else None
    except ValueError:
        answer = None
    return answer, result
