"""The one door to subprocesses: every env-side step (worker job, a ref's exporter) runs through here.

A step runs in its own process group with a timeout, its combined output goes to a log file, and what comes back is
data (exit code, timed out, log tail): a crash or a hang in YOLOv5 code costs one step, never the
harness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HARNESS_ROOT = Path(__file__).resolve().parent.parent
TAIL_LINES = 40


@dataclass
class ProcResult:
    argv: list[str]
    returncode: int | None
    timed_out: bool
    seconds: float
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        return tail(self.text(), lines)

    def failure(self) -> str | None:
        """Why the process itself failed (timeout, signal, exit code), or None when it exited 0."""
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
        try:
            while proc.poll() is None:
                if time.monotonic() - start > timeout or (watchdog and watchdog()):
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.5)
        except BaseException:  # Ctrl-C: take the child's group down with us, then let the interrupt through
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return ProcResult(argv, proc.returncode, timed_out, time.monotonic() - start, log)


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
