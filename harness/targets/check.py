"""The target checks of a run: for each enabled [targets.NAME] and each cell whose artifact it takes, compile and run
it in the target's env (envside.py, a child of the target's warm process, boxed like the matrix's steps), judge the
comparison, and join the result into the cell's JSON under ``targets.NAME``.

A check is keyed like a cell (its ``inputs_key``): the cell's own key, the toolkit's pins and the spec; a rerun with
nothing changed keeps the stored result. And by what it compiled (``content_key``: the artifact's bytes, the input
photo and size, the toolkit's pins and the spec): the same bytes compile once, whichever cell or run exported them
(two cells whose exports are identical, a cell rerun into another results folder), from
``<cache>/targets/<name>/checked/<content_key>.json``; ``--force`` checks again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from harness.axes import FORMATS
from harness.config import TargetSpec
from harness.envs import proc, sandbox
from harness.envs.warm import WarmPool
from harness.files import write_json
from harness.results import model as results
from harness.results.model import CellResult, OutputMatch, TargetAttempt, TargetResult
from harness.run.artifacts import content_hash, regenerate
from harness.targets import causes, env
from harness.targets.toolkits import TOOLKITS, Toolkit
from harness.worker.protocol import TargetAnswer, TargetJob

Log = Callable[[str], None]
# Files a check keeps in its folder: the compiled model's description, logs and the answer (weights are rebuilt in
# seconds by rerunning; a .rknn or ncnn .bin of yolov5s is 15-30 MB per cell).
KEEP = ("*.log", "*.json", "*.param", "*.xml")
# How a check whose process never answered begins its message (judge writes it, transient reads it).
NO_ANSWER = "the target's process did not answer"
# Bump when a check's meaning changes (what it compares), so stored checks are made again: 2 adds the decode + NMS.
CHECK_VERSION = 2


@dataclass(frozen=True)
class Job:
    """One cell's artifact for one target (``artifact`` None: the export did not pass, or its file is gone)."""

    path: Path  # the cell's result file
    result: CellResult
    artifact: Path | None
    image: str

    @property
    def photos(self) -> Path:
        """The folder of the cell's photo (the ref's data/images): what an INT8 build calibrates on."""
        return Path(self.image).parent


def artifact_of(result: CellResult, suffixes: tuple[str, ...]) -> Path | None:
    """The file ending in one of ``suffixes`` the cell's deciding attempt wrote, if it passed and the file is still
    there (v5.0/v6.0 write ``model.torchscript.pt``, later refs ``model.torchscript``)."""
    attempt = result.deciding
    if attempt.status != "pass" or attempt.export is None or not attempt.export.log:
        return None
    folder = Path(attempt.export.log).parent
    found = [folder / f["name"] for f in attempt.export.files if str(f.get("name", "")).endswith(suffixes)]
    return found[0] if found and found[0].is_file() else None


def jobs_for(kit: Toolkit, spec: TargetSpec, paths: Iterable[Path]) -> list[Job]:
    """The cells ``spec`` applies to: its variants, in the format the toolkit takes."""
    jobs = []
    for path in paths:
        result = results.read_result(path)
        if result is None or result.format not in (spec.formats or kit.formats) or result.variant not in spec.variants:
            continue
        jobs.append(Job(path, result, artifact_of(result, FORMATS[kit.artifact].suffixes), result.deciding.image or ""))
    return jobs


def inputs_key(kit: Toolkit, spec: TargetSpec, job: Job) -> str:
    """What a target's result depends on: the cell's own inputs (which decide its export), the toolkit's pins and
    the spec. Not the file itself: [artifacts] keep may have removed it after the check."""
    parts = [CHECK_VERSION, job.result.inputs_key, sorted(kit.requirements), spec.options, spec.min_cosine]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def content_key(kit: Toolkit, spec: TargetSpec, job: Job, artifact: Path) -> str:
    """What a check's answer depends on, by content: the artifact's bytes, the input (photo and size), the toolkit's
    pins and the spec."""
    imgsz = int(job.result.model.get("imgsz") or 640)
    parts = [CHECK_VERSION, content_hash(artifact), content_hash(Path(job.image)), imgsz, sorted(kit.requirements),
             spec.options, spec.min_cosine, kit.reference, decode_contract(job.result, spec)]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def decode_contract(result: CellResult, spec: TargetSpec) -> dict[str, Any] | None:
    """What the target's decode check needs from the cell's own (harness/worker/decode.py): strides, pixel anchors,
    which output is which level, and whether the build is quantized (its boxes are matched as detections, not to
    rounding). None when the cell's outputs hold no raw level (variant 1, v6.2+ native)."""
    record = result.deciding.decode
    if not record or not record.get("output_order") or not record.get("anchors"):
        return None
    return {"strides": record["strides"], "anchors": record["anchors"],
            "sigmoid_in_graph": bool(record.get("sigmoid_in_graph")),
            "order": [row["output"] for row in record["output_order"]],
            "quantized": TOOLKITS[spec.name].quantized(spec.settings)}


def checked_before(cache: Path, name: str, key: str) -> TargetResult | None:
    """The check of the same bytes made before, if any (a file that does not read is no answer)."""
    path = cache / "targets" / name / "checked" / f"{key}.json"
    try:
        return results.from_json(json.loads(path.read_text()), TargetResult)
    except (OSError, ValueError, TypeError):
        return None


def transient(section: TargetResult) -> bool:
    """A failure the same bytes may not meet again (the toolkit overran its timeout on a loaded machine, or its
    process never answered): kept in the cell, not reused by content."""
    attempt = section.deciding
    return attempt.cause == "timeout" or attempt.message.startswith(NO_ANSWER)


def remember(cache: Path, name: str, key: str, section: TargetResult) -> None:
    write_json(cache / "targets" / name / "checked" / f"{key}.json", results.to_json(section))


def judge(answer: TargetAnswer | None, ran: proc.ProcResult, spec: TargetSpec) -> TargetAttempt:
    """The attempt from envside's answer: pass when every output matches in shape and cosine."""
    if answer is None or not answer.get("ok"):
        failure = (answer or {}).get("error") or ran.failure() or "no answer"
        return failed(TargetAttempt(stage="build"), f"{NO_ANSWER}: {failure}",
                      (answer or {}).get("log") or ran.tail())
    attempt = TargetAttempt(stage=answer.get("stage"), timings=answer.get("timings") or {},
                            artifact=answer.get("compiled"))
    if answer.get("error"):
        return failed(attempt, f"{attempt.stage}: {answer['error']}", answer.get("log") or "")
    attempt.outputs = [results.from_json(row, OutputMatch) for row in answer.get("outputs") or []]
    wrong = [o for o in attempt.outputs if o.error]
    low = [o for o in attempt.outputs if o.cosine is not None and o.cosine < spec.min_cosine]
    if not attempt.outputs or wrong:
        attempt.status, attempt.stage, attempt.cause = "fail", "compare", "output count/shape differs"
        attempt.message = "; ".join(f"{o.output}: {o.error} ({o.shape} vs {o.target_shape})" for o in wrong) or \
            "no outputs"
    elif low:
        attempt.status, attempt.stage, attempt.cause = "fail", "compare", "differs from the reference"
        attempt.message = "; ".join(f"{o.output}: cosine {o.cosine:.6f} < {spec.min_cosine}" for o in low)
    else:
        worst = min(attempt.outputs, key=lambda o: o.cosine if o.cosine is not None else 1.0)
        attempt.status, attempt.stage = "pass", None
        attempt.message = (f"{len(attempt.outputs)} output(s) match; worst cosine {worst.cosine:.6f}, "
                           f"max abs {max(o.max_abs or 0.0 for o in attempt.outputs):.2g}")
        judge_decode(attempt, answer.get("decode"))
    return attempt


def judge_decode(attempt: TargetAttempt, record: dict[str, Any] | None) -> None:
    """A target whose numbers match can still lose boxes a deployer keeps: the decode + NMS agreement decides too."""
    attempt.decode = record
    if record is None:
        return
    if record.get("error"):
        attempt.status, attempt.stage, attempt.cause = "fail", "compare", "decode check could not run"
        attempt.message += f"; decode check could not run: {record['error']}"
        return
    said = (f"decode: {record['matched']} of {record['kept_eager']} boxes kept after NMS match at IoU "
            f"{record['match_iou']:g} (worst level {record['matched_fraction']:.1%})")
    attempt.message += f"; {said}"
    if not record.get("pass"):
        attempt.status, attempt.stage, attempt.cause = "fail", "compare", "decode differs after NMS"


def failed(attempt: TargetAttempt, message: str, log: str) -> TargetAttempt:
    """An error attempt with its named cause; a failure of the reference runtime (the target's toolkit had already
    compiled and run the file) says so in the cause."""
    cause = causes.name_of(message, log)
    attempt.status = "error"
    attempt.cause = cause.name if cause else "unclassified: " + message.split(": ", 1)[-1][:160]
    if attempt.stage == "reference":
        attempt.cause = f"reference runtime: {attempt.cause}"
    attempt.message, attempt.hint = message[:500], cause.hint if cause else ""
    attempt.log_tail = "\n".join(log.strip().splitlines()[-proc.TAIL_LINES:])
    return attempt


class Checker:
    """Runs one target's checks: its env built once, each check a child of the target's warm process, which imports
    the toolkit and the reference runtime once (harness/envs/warm.py; envside.py's ``serve``), in a box that reads
    ``reads`` (the checks' artifact and photo folders) and writes below the target's cache folder only."""

    def __init__(self, kit: Toolkit, spec: TargetSpec, cache: Path, box: sandbox.Box, log: Log, reads: list[Path],
                 threads: int | None = None):
        self.kit, self.spec, self.cache, self.log, self.threads = kit, spec, cache, log, threads
        self.python = env.ensure_env(kit, cache, log=log)
        root = cache / "targets" / kit.name
        self.workers = WarmPool(root / "warm", {}, preload=kit.warm_imports, module="harness.targets.envside",
                                jail=sandbox.warm_jails(box, cache=cache, workroot=root, read=reads))

    def check(self, job: Job, artifact: Path) -> TargetResult:
        where = hashlib.sha256(str(job.path.parent.resolve()).encode()).hexdigest()[:8]
        workdir = self.cache / "targets" / self.kit.name / f"{job.result.cell}-{where}"
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        task: TargetJob = {"task": "check", "target": self.kit.name, "reference": self.kit.reference,
                           "artifact": str(artifact), "image": job.image, "photos": str(job.photos),
                           "workdir": str(workdir), "imgsz": int(job.result.model.get("imgsz") or 640),
                           "options": self.spec.settings, "decode": decode_contract(job.result, self.spec),
                           "threads": self.threads}
        start = time.monotonic()
        answer, ran = self.workers.run_worker(self.python, task, workdir=workdir, watch=proc.Watch(self.spec.timeout))
        attempt = judge(cast("TargetAnswer | None", answer), ran, self.spec)
        attempt.timings["total"] = round(time.monotonic() - start, 1)
        clean(workdir)
        return TargetResult(target=self.kit.name, tool=f"{self.kit.tool} {self.kit.version}",
                            artifact=self.kit.artifact, options=self.spec.settings,
                            reference=(answer or {}).get("reference") or self.kit.reference,
                            versions=(answer or {}).get("versions") or {}, attempts=[attempt], decided=0,
                            created=time.time())

    def close(self, kill: bool = False) -> None:
        self.workers.close(kill=kill)


def clean(workdir: Path) -> None:
    kept = {p for pattern in KEEP for p in workdir.glob(pattern)}
    for path in workdir.iterdir():
        if path.is_symlink() or (path.is_file() and path not in kept):
            path.unlink()


def join(path: Path, name: str, section: TargetResult, inputs_key: str) -> None:
    """Write ``section``, keyed by the cell's ``inputs_key``, as ``targets.NAME`` of the result file, re-read just
    before the atomic write."""
    section.inputs_key = inputs_key
    current = results.read_result(path)
    if current is None:
        return
    current.targets[name] = section
    write_json(path, current.to_json())


@dataclass(frozen=True)
class _Pending:
    """A cell still to check on a target: its job and the key its result will carry."""

    job: Job
    inputs_key: str


def run_targets(specs: dict[str, TargetSpec], reports: Path, cache: Path, *, cells: set[str] | None = None,
                force: bool = False, log: Log = print, sandbox_mode: str = "auto", jobs: int = 1) -> list[TargetResult]:
    """Check every cell of ``reports`` (or only ``cells``) on each target of ``specs``, up to ``jobs`` checks at a
    time; returns what was written. Cells whose artifacts are byte-identical share one check."""
    if not specs:
        return []
    paths = [p for p in sorted(results.results_dir(reports).glob("*.json")) if cells is None or p.stem in cells]
    done: list[TargetResult] = []
    todo: dict[tuple[str, str], list[_Pending]] = {}  # (target, content key) -> the cells of those bytes
    for name, spec in specs.items():
        kit = TOOLKITS[name]
        for job in jobs_for(kit, spec, paths):
            key = inputs_key(kit, spec, job)
            stored = job.result.targets.get(name)
            if not force and stored and stored.inputs_key == key:
                log(f"[{name}] {job.result.cell}: unchanged, kept ({stored.verdict})")
                continue
            if job.artifact is None or not job.image:
                why = "the export did not pass" if job.result.deciding.status != "pass" else \
                    f"its exported file is gone (remake it: {regenerate(job.result)})"
                log(f"[{name}] {job.result.cell}: skipped — nothing to compile: {why}")
                continue
            same = content_key(kit, spec, job, job.artifact)
            section = None if force else checked_before(cache, name, same)
            if section is None:
                todo.setdefault((name, same), []).append(_Pending(job, key))
                continue
            log(f"[{name}] {job.result.cell}: the same bytes were checked before, kept ({section.verdict})")
            join(job.path, name, section, key)
            done.append(section)
    done += _check_all(specs, todo, cache, sandbox.choose(sandbox_mode), log, jobs)
    return done


def _check_all(specs: dict[str, TargetSpec], todo: dict[tuple[str, str], list[_Pending]], cache: Path,
               box: sandbox.Box, log: Log, jobs: int) -> list[TargetResult]:
    """Run one check per (target, bytes), ``jobs`` at a time (a check is mostly one busy core: rknn's build, pnnx),
    and join each result into its cells' files from this thread alone."""
    checkers: dict[str, Checker] = {}
    # Side by side, each check gets its share of the cores: toolkits' and runtimes' spinning thread pools would
    # otherwise take turns on every core (measured on 2 cores: 75 s -> 59 s for one env's 30 checks).
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else None
    for name in dict.fromkeys(name for name, _ in todo):
        reads = {p for (n, _), group in todo.items() if n == name for item in group
                 for p in (cast(Path, item.job.artifact).parent, item.job.photos)}
        checkers[name] = Checker(TOOLKITS[name], specs[name], cache, box, log, sorted(reads), threads)
    done: list[TargetResult] = []
    ok = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            running = {pool.submit(checkers[name].check, group[0].job, cast(Path, group[0].job.artifact)): (name, same)
                       for (name, same), group in todo.items()}
            for future in as_completed(running):
                name, same = running[future]
                section = future.result()
                section.content_key = same
                if not transient(section):
                    remember(cache, name, same, section)
                first, *others = todo[(name, same)]
                log(f"[{name}] {first.job.result.cell}: {section.verdict} — {section.deciding.message[:200]} "
                    f"({section.deciding.timings.get('total', 0):.0f} s)")
                for n, item in enumerate([first, *others]):
                    mine = section if n == 0 else copy.deepcopy(section)
                    if n:
                        log(f"[{name}] {item.job.result.cell}: the same bytes as {first.job.result.cell}, checked once "
                            f"({mine.verdict})")
                    join(item.job.path, name, mine, item.inputs_key)
                    done.append(mine)
        ok = True
    finally:
        for checker in checkers.values():
            checker.close(kill=not ok)  # Ctrl-C or a failure: the checks in flight die with the run
    return done
