"""Warm workers: one env process that imports torch & co once and forks a child per job (harness/worker/serve.py).

A drop-in for :func:`harness.envs.proc.run_worker`: same job, same answer, and a :class:`~harness.envs.proc.ProcResult`
for the
child, watched by the same loop (:func:`harness.envs.proc.supervise`), so the supervisor's fault handling is unchanged.
A
child that dies or overruns is killed alone (its own process group) and costs only its job; if the warm process
itself dies, the next job starts a fresh one.

Environment variables of a job that the env reads at call time (``CALL_TIME_ENV``) are set in the child; any other
extra variable could act while torch imports, so a job that needs one gets a warm process started with it.

Sandboxed (harness/envs/sandbox.py), the warm process runs in a box that sees the env, the trees and the harness code
read-only and writes only below the env's work folder, and keeps its jobs' processes in a PID namespace of its own
(a process whose parent ended is killed at once); each job confines itself further right after the fork (Landlock
to its own folders, no capabilities), before any of the ref's code runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.envs import bytecode, proc
from harness.envs.sandbox import Jail
from harness.worker.serve import PRELOAD

# The jail of a warm process, given its interpreter and folder (None: unconfined).
JailFor = Callable[[Path, Path], Jail | None]

# Read by torch when torch.load runs (torch/serialization.py), not at import: safe to set in a forked child.
CALL_TIME_ENV = frozenset({"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"})
LIFETIME = 7 * 24 * 3600.0  # the warm process lives as long as the run; jobs carry their own timeouts
START_GRACE = 10.0  # seconds a job may wait to be forked before the warm process counts as stuck


class _Job:
    """Job ``n`` of a warm process, as :func:`harness.envs.proc.supervise` sees it: files in the queue directory."""

    def __init__(self, worker: WarmWorker, n: int):
        self.worker, self.n = worker, n
        self.pid_file = worker.queue / f"{n}.pid"
        self.exit_file = worker.queue / f"{n}.exit"

    def poll(self) -> int | None:
        if self.exit_file.exists():
            return int(json.loads(self.exit_file.read_text())["returncode"])
        if not self.worker.alive():  # the warm process died with this job in flight: like a worker that died
            self.kill(escalate=False)
            return -signal.SIGKILL
        return None

    def group(self) -> int | None:
        try:
            return int(json.loads(self.pid_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def kill(self, escalate: bool) -> None:
        """Kill this job's child and its process group (never its siblings). ``escalate``: wait for the child to be
        forked, and kill the warm process itself if it never is (it is stuck)."""
        deadline = time.monotonic() + START_GRACE
        while escalate and not self.pid_file.exists() and self.worker.alive() and time.monotonic() < deadline:
            time.sleep(proc.POLL)
        pgid = self.group()
        if pgid is None:
            if escalate and self.worker.alive():
                self.worker.close(kill=True)
            return
        if not self.exit_file.exists():  # once reaped, its pid may belong to someone else
            proc.kill_group(pgid)

    def wait(self) -> int | None:
        """The code the warm process reaped the child with (SIGKILL when it is gone too)."""
        while not self.exit_file.exists() and self.worker.alive():
            time.sleep(proc.POLL)
        return self.poll() if self.exit_file.exists() else -signal.SIGKILL


class WarmWorker:
    """One warm env process serving jobs from a queue directory."""

    def __init__(self, python: Path, root: Path, env_extra: dict[str, str], memory_mb: float | None,
                 preload: list[str] | None = None, jail: JailFor | None = None, module: str = "harness.worker"):
        self.python, self.root, self.env_extra = python, root, env_extra
        self.preload = list(PRELOAD) if preload is None else preload  # what it imports before forking
        self.module = module  # the env-side entry point whose "serve" task forks the jobs
        self.memory_mb = memory_mb
        self.queue = root / "queue"
        if root.exists():
            shutil.rmtree(root)
        self.queue.mkdir(parents=True)
        self.jail = jail(python, root) if jail else None
        self.lock = threading.Lock()
        self.count = 0
        self.stopping = False
        self.ran: proc.ProcResult | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"warm-{root.name}")
        self.thread.start()

    def _serve(self) -> None:
        job = {"task": "serve", "queue": str(self.queue), "preload": self.preload,
               "isolate": bool(self.jail and self.jail.isolate)}
        # An interrupted run (Ctrl-C) kills the warm process: nothing to report then.
        with contextlib.suppress(proc.Interrupted):
            bytecode.ensure(self.python, self.preload, self.jail, self.root)
            _, self.ran = proc.run_worker(self.python, job, workdir=self.root, env_extra=self.env_extra,
                                          watch=proc.Watch(LIFETIME, watchdog=lambda: self.stopping),
                                          module=self.module, jail=self.jail)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def run(self, job: Mapping[str, Any], *, workdir: Path, watch: proc.Watch,
            env: dict[str, str]) -> tuple[dict[str, Any] | None, proc.ProcResult]:
        job_file, out = proc.write_job(workdir, job)
        queued = {**json.loads(job_file.read_text()), "env": env}
        confine = self.jail.job(queued, workdir) if self.jail else None
        if confine:
            queued["confine"] = confine  # applied by the job's child before the job runs (harness/worker/serve.py)
        with self.lock:
            self.count += 1
            n = self.count
            path = self.queue / f"{n}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(queued, indent=1))
            os.replace(tmp, path)  # the warm process only ever sees whole jobs
        log = self.queue / f"{n}.log"
        ending = proc.supervise(_Job(self, n), proc.Watch(watch.timeout, self.memory_mb, watch.watchdog),
                                f"job {n}")
        job_log = workdir / f"{job['task']}.log"
        if ending.killed_for:
            with log.open("a") as fh:
                fh.write(f"\nharness: killed the job's process group: {ending.killed_for}\n")
        if log.exists():
            try:
                shutil.copyfile(log, job_log)  # beside the job, where the one-shot worker leaves its log
                log = job_log
            except OSError:  # a full disk (the job likely met it too): its log stays readable where it was written
                pass
        ran = proc.ProcResult(["fork", str(self.python), job["task"], str(n)], ending.returncode, ending.timed_out,
                              ending.seconds, log, ending.killed_for)
        return proc.read_answer(out), ran

    def close(self, kill: bool = False) -> None:
        """Stop after the jobs in flight (or, with ``kill``, kill them and the warm process now)."""
        (self.queue / "stop").touch()
        if not kill:
            self.thread.join(timeout=60)
        if self.thread.is_alive() or kill:
            self.stopping = True  # the watchdog of run_process kills the warm process's group
            for n in range(1, self.count + 1):
                _Job(self, n).kill(escalate=False)
            self.thread.join()
        elif self.ran is not None and self.ran.returncode == 0:
            # Ended cleanly: its jobs' logs were copied beside them; the queue is all that is left. A warm process that
            # failed keeps its folder (serve.log) for whoever looks into it.
            shutil.rmtree(self.root, ignore_errors=True)


class WarmPool:
    """The warm workers of one env run, one per (interpreter, import-time environment), started on first use."""

    def __init__(self, root: Path, env_extra: dict[str, str], memory_mb: float | None = None,
                 preload: list[str] | None = None, jail: JailFor | None = None, module: str = "harness.worker"):
        self.root, self.env_extra, self.memory_mb, self.preload = root, env_extra, memory_mb, preload
        self.jail, self.module = jail, module
        self.workers: dict[tuple[str, tuple[tuple[str, str], ...]], WarmWorker] = {}
        self.lock = threading.Lock()

    def run_worker(self, python: Path, job: Mapping[str, Any], *, workdir: Path, watch: proc.Watch,
                   env_extra: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, proc.ProcResult]:
        """Like :func:`harness.envs.proc.run_worker`, in a child of a warm process for ``python``."""
        extra = {**self.env_extra, **(env_extra or {})}
        at_start = tuple(sorted((k, v) for k, v in extra.items() if k not in CALL_TIME_ENV))
        in_child = {k: v for k, v in extra.items() if k in CALL_TIME_ENV}
        key = (str(python), at_start)
        with self.lock:
            worker = self.workers.get(key)
            if worker is None or not worker.alive():  # first use, or the last one died: a fresh warm process
                name = f"warm-{len(self.workers)}-{int(time.time() * 1000) % 100000}"
                worker = self.workers[key] = WarmWorker(python, self.root / name, dict(at_start), self.memory_mb,
                                                        self.preload, self.jail, self.module)
        return worker.run(job, workdir=workdir, watch=watch, env=in_child)

    def close(self, kill: bool = False) -> None:
        """Stop every warm process after its jobs in flight (``kill``: kill them now)."""
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            worker.close(kill=kill)
