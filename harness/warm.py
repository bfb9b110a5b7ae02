"""Warm workers: one env process that imports torch & co once and forks a child per job (harness/worker/serve.py).

A drop-in for :func:`harness.proc.run_worker`: same job, same answer, and a :class:`~harness.proc.ProcResult` for the
child, so the supervisor's fault handling is unchanged. A child that dies or overruns its watchdog is killed alone
(its own process group) and costs only its job; if the warm process itself dies, the next job starts a fresh one.

Environment variables of a job that the env reads at call time (``CALL_TIME_ENV``) are set in the child; any other
extra variable could act while torch imports, so a job that needs one gets a warm process started with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from harness import proc

# Read by torch when torch.load runs (torch/serialization.py), not at import: safe to set in a forked child.
CALL_TIME_ENV = frozenset({"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"})
LIFETIME = 7 * 24 * 3600.0  # the warm process lives as long as the run; jobs carry their own timeouts
POLL = 0.1


class WarmWorker:
    """One warm env process serving jobs from a queue directory."""

    def __init__(self, python: Path, root: Path, env_extra: dict[str, str], preload: list[str] | None = None):
        self.python, self.root, self.env_extra, self.preload = python, root, env_extra, preload
        self.queue = root / "queue"
        if root.exists():
            shutil.rmtree(root)
        self.queue.mkdir(parents=True)
        self.lock = threading.Lock()
        self.count = 0
        self.stopping = False
        self.ran: proc.ProcResult | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"warm-{root.name}")
        self.thread.start()

    def _serve(self) -> None:
        job = {"task": "serve", "queue": str(self.queue), "preload": self.preload}  # None: serve.PRELOAD
        try:
            _, self.ran = proc.run_worker(self.python, job, workdir=self.root, timeout=LIFETIME,
                                          env_extra=self.env_extra, watchdog=lambda: self.stopping)
        except proc.Interrupted:  # the run is interrupted (Ctrl-C): the warm process is killed, nothing to report
            pass

    def alive(self) -> bool:
        return self.thread.is_alive()

    def run(self, job: dict[str, Any], *, workdir: Path, timeout: float, env: dict[str, str],
            watchdog: Callable[[], bool] | None = None) -> tuple[dict[str, Any] | None, proc.ProcResult]:
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / f"{job['task']}.answer.json"
        out.unlink(missing_ok=True)
        with self.lock:
            self.count += 1
            n = self.count
            path = self.queue / f"{n}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({**job, "out": str(out), "env": env}, indent=1))
            os.replace(tmp, path)  # the warm process only ever sees whole jobs
        log = self.queue / f"{n}.log"
        start = time.monotonic()
        timed_out, returncode, killed_for = False, None, None
        while True:
            exit_file = self.queue / f"{n}.exit"
            if exit_file.exists():
                returncode = json.loads(exit_file.read_text())["returncode"]
                break
            if not self.alive():  # the warm process died with this job in flight: like a worker that died
                self._kill_child(n)
                break
            if proc.STOP.is_set():  # the run is interrupted: this job's cell is unfinished, kill it (issue 5)
                self._kill_child(n, escalate=False)
                raise proc.Interrupted(f"interrupted: job {n}")
            pid_file = self.queue / f"{n}.pid"
            if not killed_for and not timed_out and pid_file.exists():  # [limits] memory_mb, see harness/proc.py
                killed_for = proc.over_memory(json.loads(pid_file.read_text())["pid"])
                if killed_for:
                    self._kill_child(n)
            if not timed_out and not killed_for and (time.monotonic() - start > timeout or (watchdog and watchdog())):
                timed_out = True
                self._kill_child(n)
            time.sleep(POLL)
        job_log = workdir / f"{job['task']}.log"
        if killed_for:
            with log.open("a") as fh:
                fh.write(f"\nharness: killed the job's process group: {killed_for}\n")
        if log.exists():
            shutil.copyfile(log, job_log)  # beside the job, where the one-shot worker leaves its log
            log = job_log
        ran = proc.ProcResult(["fork", str(self.python), job["task"], str(n)], returncode, timed_out,
                              time.monotonic() - start, log, killed_for)
        if returncode is None and not timed_out:
            ran.returncode = -signal.SIGKILL  # reads "died with signal SIGKILL": the warm process was killed
        try:
            answer = json.loads(out.read_text()) if out.exists() else None
        except ValueError:
            answer = None
        return answer, ran

    def _kill_child(self, n: int, escalate: bool = True) -> None:
        """Kill job ``n``'s child and its process group (never the warm process's siblings of it)."""
        pid_file = self.queue / f"{n}.pid"
        deadline = time.monotonic() + 10
        while escalate and not pid_file.exists() and self.alive() and time.monotonic() < deadline:
            time.sleep(POLL)
        if not pid_file.exists():
            if escalate and self.alive():  # the warm process never forked it: it is stuck itself
                self.close(kill=True)
            return
        if (self.queue / f"{n}.exit").exists():
            return  # reaped already: its pid may belong to someone else by now
        try:
            os.killpg(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def close(self, kill: bool = False) -> None:
        """Stop after the jobs in flight (or, with ``kill``, kill them and the warm process now)."""
        (self.queue / "stop").touch()
        if not kill:
            self.thread.join(timeout=60)
        if self.thread.is_alive() or kill:
            self.stopping = True  # run_process's watchdog kills the warm process's group
            for n in range(1, self.count + 1):
                self._kill_child(n, escalate=False)
            self.thread.join()


class WarmPool:
    """The warm workers of one env run, one per (interpreter, import-time environment), started on first use."""

    def __init__(self, root: Path, env_extra: dict[str, str], preload: list[str] | None = None):
        self.root, self.env_extra, self.preload = root, env_extra, preload
        self.workers: dict[tuple[str, tuple[tuple[str, str], ...]], WarmWorker] = {}
        self.lock = threading.Lock()

    def run_worker(self, python: Path, job: dict[str, Any], *, workdir: Path, timeout: float,
                   env_extra: dict[str, str] | None = None,
                   watchdog: Callable[[], bool] | None = None) -> tuple[dict[str, Any] | None, proc.ProcResult]:
        """Like :func:`harness.proc.run_worker`, in a child of a warm process for ``python``."""
        extra = {**self.env_extra, **(env_extra or {})}
        at_start = tuple(sorted((k, v) for k, v in extra.items() if k not in CALL_TIME_ENV))
        in_child = {k: v for k, v in extra.items() if k in CALL_TIME_ENV}
        key = (str(python), at_start)
        with self.lock:
            worker = self.workers.get(key)
            if worker is None or not worker.alive():  # first use, or the last one died: a fresh warm process
                name = f"warm-{len(self.workers)}-{int(time.time() * 1000) % 100000}"
                worker = self.workers[key] = WarmWorker(python, self.root / name, dict(at_start), self.preload)
        return worker.run(job, workdir=workdir, timeout=timeout, env=in_child, watchdog=watchdog)

    def close(self) -> None:
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            worker.close()
