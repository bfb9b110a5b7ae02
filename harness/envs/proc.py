"""The one door to child processes: every env-side step (worker job, a ref's exporter, a tpu-mlir tool) is watched
by one loop, :func:`supervise`, and started in the sandbox the caller's ``jail`` describes (harness/envs/sandbox.py).

A step runs in its own process group with a timeout, its combined output goes to a log file, and what comes back is
data (exit code, timed out, why it was killed, log tail): a crash or a hang in YOLOv5 code costs one step, never the
harness. Two kinds of child go through the same loop: a plain subprocess (:func:`run_process`) and a job forked by a
warm env process (harness/envs/warm.py); each tells the loop how to poll, find and kill it.

Besides its own end, a step is stopped by its deadline (and a watchdog's, e.g. a per-stage timeout), by its resident
memory when a limit is given (every poll sums the RSS of the step's process group from /proc; RLIMIT_AS would be
simpler but caps address space, not memory: a CUDA build of torch maps ~3.3 GB of it just to import), and by an
interrupt: Ctrl-C or SIGTERM sets ``STOP``, and every step in flight is killed at its next poll and raises
``Interrupted``, so no thread waits for a long export. A step can overshoot a memory limit by what it allocates in
one poll interval.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from harness.envs.sandbox import Jail

HARNESS_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds harness/
TAIL_LINES = 40
POLL = 0.1  # seconds between checks of a running step (end, deadline, watchdog, memory, interrupt)

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


def over_memory(pgid: int, limit_mb: float | None) -> str | None:
    """"out of memory: ..." when process group ``pgid`` holds more than ``limit_mb`` (None: no limit)."""
    if not limit_mb:
        return None
    used = group_rss_mb(pgid)
    if used <= limit_mb:
        return None
    return f"out of memory: {used:.0f} MB resident, over the {limit_mb:.0f} MB limit ([limits] memory_mb)"


@dataclass(frozen=True)
class Watch:
    """What stops a step besides its own end: a deadline, a memory limit, a watchdog of the caller's."""

    timeout: float
    memory_mb: float | None = None
    watchdog: Callable[[], bool] | None = None  # True: the step overran a deadline of the caller's (a stage's)


class Child(Protocol):
    """A running step as :func:`supervise` sees it."""

    def poll(self) -> int | None:
        """The exit code once the step has ended (negative: killed by that signal), else None."""

    def group(self) -> int | None:
        """The process group to measure and kill, once known."""

    def kill(self, escalate: bool) -> None:
        """Kill the step's group; ``escalate``: make sure it dies even if it has not fully started."""

    def wait(self) -> int | None:
        """After a kill: the final exit code."""


@dataclass
class Ending:
    returncode: int | None
    timed_out: bool
    killed_for: str | None  # why the harness killed it other than a deadline, e.g. "out of memory: ..."
    seconds: float


def supervise(child: Child, watch: Watch, what: str) -> Ending:
    """Poll ``child`` until it ends, its deadline or watchdog fires, it outgrows the memory limit, or the run is
    interrupted (then it is killed and Interrupted raised). ``what`` names it in the interrupt message."""
    start = time.monotonic()
    try:
        while (code := child.poll()) is None:
            check_interrupt(what)
            group = child.group()
            killed_for = over_memory(group, watch.memory_mb) if group else None
            timed_out = not killed_for and (time.monotonic() - start > watch.timeout
                                            or bool(watch.watchdog and watch.watchdog()))
            if killed_for or timed_out:
                child.kill(escalate=True)
                return Ending(child.wait(), timed_out, killed_for, time.monotonic() - start)
            time.sleep(POLL)
    except BaseException:  # Ctrl-C: take the child's group down with us, then let the interrupt through
        child.kill(escalate=False)
        child.wait()
        raise
    return Ending(code, False, None, time.monotonic() - start)


def check_interrupt(what: str) -> None:
    """Raise Interrupted when the run was interrupted (Ctrl-C, SIGTERM): the caller's step is not finished."""
    if STOP.is_set():
        raise Interrupted(f"interrupted: {what}")


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


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group (the step and anything it started); quiet if it is gone already."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def capture(argv: list[str], *, timeout: float | None, env: Mapping[str, str] | None = None,
            merge: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a short tool for its output (a version, a path, an install step, a pip download), stdin closed, as the
    leader of its own process group, and kill that whole group when it ends or overruns ``timeout`` (git and pip
    leave helpers behind). Never raises for the tool: a program that cannot start answers 127, a timeout -9, with
    the reason in stderr. ``merge``: stderr into stdout, in order."""
    try:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True, env=None if env is None else dict(env),
                                 start_new_session=True)
    except OSError as exc:
        return subprocess.CompletedProcess(argv, 127, "", f"cannot start {argv[0]}: {exc}")
    try:
        out, err = popen.communicate(timeout=timeout)
        code = popen.returncode
    except subprocess.TimeoutExpired:
        kill_group(popen.pid)
        out, err = popen.communicate()
        code, err = -signal.SIGKILL, (err or "") + f"\nharness: killed after {timeout:.0f} s"
    finally:
        kill_group(popen.pid)
    return subprocess.CompletedProcess(argv, code, out or "", err or "")


class _Popen:
    """A plain subprocess, leader of its own process group."""

    def __init__(self, popen: subprocess.Popen[bytes]):
        self.popen = popen

    def poll(self) -> int | None:
        return self.popen.poll()

    def group(self) -> int | None:
        return self.popen.pid

    def kill(self, escalate: bool) -> None:
        kill_group(self.popen.pid)

    def wait(self) -> int | None:
        return self.popen.wait()


def run_process(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, watch: Watch,
                jail: Jail | None = None) -> ProcResult:
    """Run ``argv`` under ``watch``, its output to ``log``; on a kill the whole process group dies. ``jail``: run
    it in the sandbox (harness/envs/sandbox.py; None: unconfined, for the harness's own tools and tests)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start, start_env = jail.command(argv, env, cwd) if jail else (argv, env)
    with log.open("w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        popen = subprocess.Popen(start, cwd=cwd, env=start_env, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            ending = supervise(_Popen(popen), watch, argv[-1])
        finally:
            kill_group(popen.pid)  # what the step started and left behind in its group ends with it
            if jail:
                jail.cleanup()
        if ending.killed_for:
            fh.write(f"\nharness: killed the process group: {ending.killed_for}\n")
    return ProcResult(argv, ending.returncode, ending.timed_out, ending.seconds, log, ending.killed_for)


def write_job(workdir: Path, job: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write a worker job file into ``workdir``; returns (job file, the answer file it names, removed if stale)."""
    workdir.mkdir(parents=True, exist_ok=True)
    task = job["task"]
    out = workdir / f"{task}.answer.json"
    out.unlink(missing_ok=True)
    job_file = workdir / f"{task}.job.json"
    job_file.write_text(json.dumps({**job, "out": str(out)}, indent=1))
    return job_file, out


def read_answer(out: Path) -> dict[str, Any] | None:
    try:
        answer = json.loads(out.read_text()) if out.exists() else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def run_worker(python: Path, job: Mapping[str, Any], *, workdir: Path, watch: Watch,
               env_extra: dict[str, str] | None = None, base_env: dict[str, str] | None = None,
               module: str = "harness.worker", jail: Jail | None = None) -> tuple[dict[str, Any] | None, ProcResult]:
    """Send one job to ``module`` (an env-side entry point: harness.worker, harness.compile.envside) in ``python``;
    return its answer (None if it never answered) and how the process ended. ``base_env`` replaces our own
    environment as the start (see child_env); ``env_extra`` is added to it. ``jail``: see run_process."""
    job_file, out = write_job(workdir, job)
    env = {**(base_env if base_env is not None else child_env()), **(env_extra or {}), "PYTHONPATH": str(HARNESS_ROOT)}
    result = run_process([str(python), "-m", module, str(job_file)], cwd=workdir, env=env,
                         log=workdir / f"{job['task']}.log", watch=watch, jail=jail)
    return read_answer(out), result
