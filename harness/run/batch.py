"""One attempt at a batch of cells (same ref, same patched tree) in the env's workers, and its judging.

A worker (a child of the env's warm process, torch already imported: harness/envs/warm.py) imports the ref once and runs
the cells in turn, streaming a progress event per stage. If it dies or overruns a stage, the cell in flight is
charged (error, its stage, the reason) and a fresh child carries on with the rest. The worker measures; this module
turns its measurements into typed attempts (harness/verify/judge.py decides pass/fail) and names the cause of a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from harness.axes import FORMATS
from harness.config import Config, EnvSpec, Timeouts
from harness.envs import proc
from harness.envs.warm import WarmPool
from harness.errors import HarnessError
from harness.results import model as results
from harness.results.model import Attempt, CellResult, ExportFacts, Output, Parity, Stage
from harness.run import artifacts, exporters
from harness.verify import causes
from harness.verify.judge import judge
from harness.worker.protocol import AttemptJob, CellEvent, CellSpec, StageEvent

# How ONNX Runtime's errors start; at the load stage one means the file itself is refused.
ONNXRUNTIME_REFUSES = "[ONNXRuntimeError]"
WEIGHTS_NAME = "model.pt"  # never a release-asset name: v5.0's attempt_download would try GitHub for yolov5s.pt


@dataclass
class EnvContext:
    """What every step of one env run shares: the env, its interpreter, the config and where things go."""

    config: Config
    spec: EnvSpec
    python: Path
    cache: Path
    workroot: Path  # <cache>/work/<env>: jobs, warm processes
    cellroot: Path  # the cells' artifacts, per results folder (see run.cell_root)
    workers: WarmPool
    log: Callable[[str], None]
    threads: int | None = None  # intra-op threads per job (None: torch's and ONNX Runtime's default)
    options: tuple[causes.Workaround, ...] = ()  # export options applied to every attempt (run.Options options)


def failed(stage: str = "export", message: str = "", log_tail: str = "") -> Attempt:
    """An attempt that stopped at ``stage`` without measurements."""
    return Attempt(status="error", stage=stage, message=message, log_tail=log_tail)  # type: ignore[arg-type]


def name_cause(attempt: Attempt, with_hint: bool) -> causes.Cause | None:
    """Name why an attempt did not pass (setting its ``cause``), and turn a pass whose ONNX opset differs from the
    one the script asked for into a fail: the file works here but not for a compiler bound to that opset."""
    if attempt.status == "pass":
        export = attempt.export or ExportFacts()
        log = Path(export.log) if export.log else None
        mismatch = causes.opset_mismatch(export.opset_written, export.opset_requested,
                                         log.read_text(errors="replace") if log and log.exists() else "")
        if not mismatch:
            return None
        attempt.status, attempt.stage, attempt.message = "fail", "export", f"{mismatch}; {attempt.message}"
    cause = causes.classify(attempt.message, attempt.log_tail)
    if _out_of_space(attempt):
        cause = next(c for c in causes.CAUSES if c.name == artifacts.DISK_FULL)
    attempt.cause = cause.name if cause else causes.name_of(attempt.message, attempt.log_tail)
    if with_hint and cause:
        attempt.message = f"{cause.hint}: {attempt.message}"
    return cause


def _out_of_space(attempt: Attempt) -> bool:
    """The attempt failed where the disk is full now. torch's C++ ONNX serializer does not check its writes: on a full
    disk it leaves a truncated file and no error, and what fails is the next step that reads it (a protobuf
    DecodeError), not the write; the full disk is the cause, which stops the run (run/matrix.py)."""
    folder = Path(attempt.export.log).parent if attempt.export and attempt.export.log else None
    return folder is not None and folder.is_dir() and artifacts.free_mb(folder) < 1


class StageWatch:
    """Reads a worker's progress file: which cell and stage it is in, since when, and whether that overran."""

    def __init__(self, progress: Path, timeouts: Timeouts):
        self.progress, self.timeouts = progress, timeouts
        self.overran = False
        self._seen = 0
        self._since = time.monotonic()

    def limit(self, stage: str) -> float:
        return self.timeouts.export if stage == "export" else self.timeouts.verify

    def events(self) -> list[StageEvent | CellEvent]:
        found: list[StageEvent | CellEvent] = []
        for line in self.progress.read_text().splitlines() if self.progress.exists() else []:
            try:
                found.append(json.loads(line))
            except ValueError:
                break  # a line cut by a crash: everything before it holds
        return found

    def current(self) -> tuple[str, str] | None:
        events = self.events()
        last = events[-1] if events else None
        if last is not None and last["event"] == "stage":
            return last["cell"], cast(StageEvent, last)["stage"]
        return None

    def overrun(self) -> bool:
        events = self.events()
        if len(events) != self._seen:
            self._seen, self._since = len(events), time.monotonic()
        now = self.current()
        stage = now[1] if now else "export"  # before the first event: imports, charged like an export
        self.overran = time.monotonic() - self._since > self.limit(stage)
        return self.overran


class BatchRunner:
    """Runs one attempt (out of the box, or with a workaround) of a batch of cells in as few workers as faults
    allow."""

    def __init__(self, ctx: EnvContext):
        self.ctx = ctx

    def attempt(self, tree: Path, weights: Path, batch: list[CellResult], label: str, fix: causes.Workaround,
                python: Path | None = None) -> dict[str, Attempt]:
        """Export + verify every cell of ``batch`` from ``tree`` with ``fix`` applied (and the run's export options);
        the attempt per cell id."""
        if self.ctx.options:
            fix = causes.combine([fix, *self.ctx.options])
        try:
            shape = exporters.detect_exporter(tree, batch[0].ref)
        except HarnessError as exc:
            return {r.cell: failed(message=str(exc)) for r in batch}
        specs = {r.cell: self.spec(r, shape, tree, weights, label, fix) for r in batch}
        outcomes: dict[str, Attempt] = {}
        pending = list(specs)
        round_no = 0
        while pending:
            round_no += 1
            job, watch, jobdir = self.job(tree, weights, fix, [specs[c] for c in pending], round_no)
            total = (self.ctx.config.timeouts.export + self.ctx.config.timeouts.verify) * len(pending)
            _, ran = self.ctx.workers.run_worker(python or self.ctx.python, job, workdir=jobdir, env_extra=fix.env,
                                                 watch=proc.Watch(total, watchdog=watch.overrun))
            finished = {e["cell"]: cast(CellEvent, e) for e in watch.events() if e["event"] == "cell"}
            for cell_id, event in finished.items():
                outcomes[cell_id] = self.judge_event(specs[cell_id], event)
            pending = [c for c in pending if c not in finished]
            if pending and ran.failure():
                # The worker died or overran: charge the cell in flight, then carry on with a fresh worker.
                in_flight, stage = watch.current() or (pending[0], "export")
                reason = f"worker {ran.failure()} during {stage}" + (
                    f" (stage timeout {watch.limit(stage):.0f} s)" if watch.overran else "")
                outcomes[in_flight] = failed(stage, reason, cell_log(specs[in_flight], ran))
                pending.remove(in_flight)
            elif pending:
                for cell_id in pending:  # answered without touching them: the worker itself is broken
                    outcomes[cell_id] = failed(message="worker stopped early", log_tail=ran.tail())
                pending = []
        return outcomes

    def spec(self, result: CellResult, shape: exporters.ExporterShape, tree: Path, weights: Path, label: str,
             fix: causes.Workaround) -> CellSpec:
        """The worker's instructions for one cell, in a fresh work directory holding a symlink to the weights."""
        workdir = self.ctx.cellroot / result.cell / label
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        # A symlink, not a hard link: a write through a hard link would change the checkpoint every cell shares, and a
        # sandboxed job may write in its workdir (the symlink's target stays read-only to it).
        (workdir / WEIGHTS_NAME).symlink_to(weights)
        result.artifacts_dir = str(workdir.parent)
        fmt = result.format
        imgsz = self.ctx.config.model.imgsz
        return {
            "id": result.cell, "variant": result.variant, "format": fmt, "workdir": str(workdir),
            "argv": exporters.command(shape, tree, WEIGHTS_NAME, imgsz, fmt, fix.opset),
            "suffixes": list(FORMATS[fmt].suffixes),
            "opset_requested": exporters.requested_opset(shape, tree, fix.opset) if fmt != "torchscript" else None,
        }

    def job(self, tree: Path, weights: Path, fix: causes.Workaround, cells: list[CellSpec],
            round_no: int) -> tuple[AttemptJob, StageWatch, Path]:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", fix.name)[:60]
        jobdir = self.ctx.workroot / "jobs" / f"{tree.parent.name[:12]}-{tree.name}-{slug}-{round_no}"
        if jobdir.exists():
            shutil.rmtree(jobdir)
        jobdir.mkdir(parents=True)
        progress = jobdir / "progress.jsonl"
        progress.touch()
        config = self.ctx.config
        job: AttemptJob = {"task": "attempt", "tree": str(tree), "weights": str(weights), "imgsz": config.model.imgsz,
               "atol": config.tolerances.atol, "rtol": config.tolerances.rtol, "progress": str(progress),
               "shims": list(fix.shims), "threads": self.ctx.threads, "cells": cells}
        return job, StageWatch(progress, config.timeouts), jobdir

    def judge_event(self, spec: CellSpec, event: CellEvent) -> Attempt:
        """Turn one finished cell's measurements into its attempt (status, stage, message, details)."""
        export = event["export"]
        workdir = Path(export["workdir"])  # another cell's, when both ran the very same export command
        log = workdir / "export.log"
        log_text = log.read_text(errors="replace") if log.exists() else ""
        produced = [workdir / name for name in export["produced"]]
        facts = ExportFacts(argv=spec["argv"], exit_code=export["exit_code"], seconds=round(export["seconds"], 3),
                            shared_with=None if workdir == Path(spec["workdir"]) else str(workdir),
                            opset_requested=spec["opset_requested"],
                            files=[{"name": p.name, "bytes": p.stat().st_size} for p in produced if p.exists()],
                            log=str(log))
        out = Attempt(export=facts, log_tail=proc.tail(log_text), timings={"export": facts.seconds or 0.0})
        if not exporters.artifacts(produced, spec["format"]):
            reason = exporters.failure_line(log_text, spec["format"])
            out.message = f"export: no {spec['format']} file written (exit code {export['exit_code']})" + (
                f": {reason}" if reason else "")
            return out
        if "error" in event:
            err = event["error"]
            stage = err.get("stage") or "load"  # the worker's stage in flight: load, run or compare
            out.stage, out.message = cast(Stage, stage), f"{stage}: {err['type']}: {err['message']}"
            out.log_tail = proc.tail(err.get("traceback", ""))
            if stage == "load" and ONNXRUNTIME_REFUSES in err["message"]:
                out.status = "fail"  # the export is there but unusable: a broken artifact, not a stage that failed
            return out
        answer = event["verify"]
        out.timings.update({k: round(v, 3) for k, v in answer["timings"].items()})
        if "onnx" in answer:
            facts.onnx = results.from_json(answer["onnx"], results.OnnxFacts)
            facts.opset_written = facts.onnx.opset
        out.detect = results.from_json(answer["detect"], results.DetectInfo)
        out.image = answer["image"]
        verdict = judge(spec["variant"], spec["format"], answer, self.ctx.config.tolerances)
        out.status, out.stage, out.message = verdict.status, verdict.stage, verdict.message  # type: ignore[assignment]
        out.outputs = results.from_json(verdict.outputs, list[Output])
        out.expected_outputs = verdict.expected_outputs
        out.decode = verdict.decode
        out.parity = results.from_json(verdict.parity, list[Parity])
        return out


def cell_log(spec: CellSpec, ran: proc.ProcResult) -> str:
    log = Path(spec["workdir"]) / "export.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return proc.tail(text + "\n" + ran.text())
