"""Running the matrix for one env: source -> checkout -> checkpoint -> patch -> export -> verify -> result JSON.

This module is the supervisor: it runs in the harness's own Python and drives every env-side step through
harness.proc, so YOLOv5 code, torch and user pickles never load here. Each step that fails becomes a result with the
stage and a message; only a broken config or an unusable env stops the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from harness import __version__, causes, exporters, lock, preflight, proc, results, shard
from harness.config import Cell, Config, EnvSpec, Timeouts, is_local_repo, plan
from harness.envs import derive, ensure_env
from harness.errors import EnvError, HarnessError, PatchError, SourceError
from harness.patch import apply_patch
from harness.source import Checkout, get_checkout, is_reachable, repo_label
from harness.verify import judge
from harness.warm import WarmPool

PATCH_LOCK = threading.Lock()
WEIGHTS_NAME = "model.pt"  # never a release-asset name: v5.0's attempt_download would try GitHub for yolov5s.pt


@dataclass
class Options:
    reports: Path
    cache: Path
    refs: list[str] | None = None
    variants: list[str] | None = None
    formats: list[str] | None = None
    force: bool = False
    fetch: bool = False
    jobs: int = os.cpu_count() or 1
    shard: tuple[int, int] | None = None  # (k, n): only block k of n of the planned cells (harness.shard)
    learn: bool = True  # try a workaround chain found on another variant of the same ref whole (EnvRun.learn)


# The harness code a cell's result depends on, beyond what its inputs_key names by value (commit, pins, model,
# tolerances): the code that runs in the env (worker/), the Detect rewrite, the exporter call, the causes and
# workarounds tried, and the judge. Everything else (config parsing, git, env building, scheduling, reporting) acts
# through those values or does not change a measurement, so editing it keeps every result; a change there that
# does alter results must bump harness.__version__, which is hashed too.
FINGERPRINT_SOURCES = ("worker", "patch.py", "exporters.py", "causes.py", "verify.py")
# A built checkpoint depends on one file of that code.
CHECKPOINT_SOURCES = ("worker/checkpoint.py",)


def harness_fingerprint(sources: tuple[str, ...] = FINGERPRINT_SOURCES) -> str:
    """Hash of the harness code a result depends on (see FINGERPRINT_SOURCES): results made by other code are not
    reused, and edits elsewhere in the harness do not rerun the matrix."""
    root = Path(__file__).parent
    digest = hashlib.sha256(__version__.encode())
    for source in sources:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def choose_source(config: Config, cache: Path, log: Callable[[str], None]) -> str:
    """The repository to run: the configured one, or the PyPI stand-in mirror when that is unreachable."""
    url = config.source.repo
    if is_local_repo(url) or is_reachable(url):
        return url
    if config.source.fallback != "mirror":
        raise SourceError(f"source: {url} is unreachable — check the network, or set fallback = \"mirror\" in "
                          f"[source] or YOLOV5_REPO to a local mirror (python -m harness mirror)")
    from harness.mirror import build_mirror, default_mirror_dir

    mirror = build_mirror(default_mirror_dir())
    banner = "!" * 100
    log(f"{banner}\n!! {url} is unreachable: running PyPI `yolov5` STAND-INS from {mirror} instead.\n"
        f"!! They are close to, not identical with, the upstream tags; every result says which distribution "
        f"stood in.\n{banner}")
    return str(mirror)


def source_label(checkout: Checkout) -> str:
    if checkout.standin:
        return (f"pypi:{checkout.standin['distribution']} (stand-in for upstream {checkout.standin['stands_in_for']},"
                f" {checkout.standin.get('closeness', 'not identical')})")
    return repo_label(checkout.url)


PROBE_FILE = "harness-probe.json"  # beside the env's build marker: the versions it imports, probed once
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # what the probe puts in YOLOV5_CONFIG_DIR


def probe_env(python: Path, workdir: Path, config_dir: Path) -> dict[str, Any]:
    """The versions the env really imports. An env's packages do not change after it is built (its directory is
    keyed by its pins), so the answer is kept in the env and the probe (a torch import) runs once per env build."""
    cached = python.parent.parent / PROBE_FILE
    key = harness_fingerprint(("worker/__main__.py",))
    if cached.is_file() and all((config_dir / font).is_file() for font in FONTS):
        try:
            stored = json.loads(cached.read_text())
            if stored.get("key") == key:
                return stored["versions"]
        except (ValueError, KeyError):
            pass
    answer, ran = proc.run_worker(python, {"task": "probe", "yolov5_config_dir": str(config_dir)},
                                  workdir=workdir, timeout=300)
    if not answer or not answer.get("ok"):
        raise HarnessError(f"env: {python} cannot run the harness worker ({ran.failure() or ''}: "
                           f"{ran.tail(3)}) — rebuild the env (delete {python.parent.parent})")
    results.write_json(cached, {"key": key, "versions": answer["versions"]})
    return answer["versions"]


class EnvRun:
    """State shared by the cells of one env run: the env, its versions, caches and the config."""

    def __init__(self, config: Config, env: str, opts: Options, log: Callable[[str], None] = print):
        self.config, self.opts, self.log = config, opts, log
        self.spec: EnvSpec = config.envs[env]
        proc.MEMORY_LIMIT_MB = config.limits.memory_mb  # every env-side step of this run
        self.started = time.time()  # results created after this by another run are that run's work (see claim)
        self.fatal: HarnessError | None = None  # a failure that stops the run (results not writable)
        with lock.hold(lock.lock_path(opts.cache, "env", self.spec.name, self.spec.key()), f"env {env}", log):
            self.python = ensure_env(self.spec, opts.cache, log=log)
        self.config_dir = opts.cache / "yolov5-config"  # YOLOV5_CONFIG_DIR: holds the offline Arial.ttf
        self.workroot = opts.cache / "work" / self.spec.name
        # Cell artifacts (exports, logs) per results folder: a result points at its files, so a run that writes its
        # results elsewhere on the same cache must not overwrite them.
        self.cellroot = cell_root(self.workroot, opts.reports)
        self._versions: dict[str, Any] | None = None
        self.fingerprint = harness_fingerprint()
        self.env_extra = {"YOLOV5_CONFIG_DIR": str(self.config_dir)}
        # Env-side jobs run in children of one warm process per env (torch imported once), see harness/warm.py.
        self.workers = WarmPool(self.workroot / "warm", self.env_extra)
        # (commit, format, first cause) -> (workaround names, the cell that found them, the steps skipped): see learn
        self.learned: dict[tuple[str, str, str], tuple[tuple[str, ...], str, list[str]]] = {}

    @property
    def versions(self) -> dict[str, Any]:
        """Probed on first need: a run whose cells are all unchanged never starts the env's Python."""
        if self._versions is None:
            with lock.hold(lock.lock_path(self.opts.cache, "probe", self.spec.name), f"probe of {self.spec.name}"):
                self._versions = probe_env(self.python, self.workroot / "probe", self.config_dir)
        return self._versions

    # -- inputs and reuse ---------------------------------------------------------------------------------------
    def inputs_key(self, cell: Cell, commit: str) -> str:
        """Everything a cell's result depends on; an unchanged key means the stored result still holds."""
        model = asdict(self.config.model)
        if model.get("weights"):
            weights = Path(model["weights"])
            model["weights_stat"] = [weights.stat().st_size, weights.stat().st_mtime] if weights.exists() else None
        parts = [commit, cell.variant, cell.format, self.spec.key(), repr(model),
                 repr(asdict(self.config.tolerances)), self.fingerprint]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]

    def base_result(self, cell: Cell, checkout: Checkout | None) -> dict[str, Any]:
        return {
            "schema": results.SCHEMA_VERSION, "cell": cell.id, "ref": cell.ref,
            "commit": checkout.commit if checkout else None,
            "source": source_label(checkout) if checkout else self.source_url,
            "repo": checkout.url if checkout else self.source_url,
            "standin": checkout.standin if checkout else None,
            "env": self.spec.name, "pins": self.spec.requirements(), "versions": self.versions,
            "model": asdict(self.config.model), "tolerances": asdict(self.config.tolerances),
            "variant": cell.variant, "format": cell.format,
            "status": "error", "stage": "checkout", "cause": None, "message": "", "log_tail": "",
            "outputs": [], "expected_outputs": None, "parity": [], "timings": {}, "export": None,
            "workaround": None, "patch_diff": "", "artifacts_dir": None,
            "harness_version": __version__, "harness_fingerprint": self.fingerprint, "created": time.time(),
        }

    def save(self, result: dict[str, Any]) -> None:
        if proc.STOP.is_set():  # interrupted: a cell whose steps were killed is not a result (issue 5)
            raise proc.Interrupted(f"interrupted before saving {result['cell']}")
        result["verdict"] = results.verdict(result)
        result["created"] = time.time()  # when it was made: merges and concurrent runs keep the newer one
        try:
            results.save_result(self.opts.reports, result)
        except HarnessError as exc:
            self.fatal = self.fatal or exc
            proc.STOP.set()  # the disk is full or gone: stop every step now rather than compute more to lose
            raise
        src = " [stand-in]" if result.get("standin") else ""
        last = result["workaround"] if result["status"] != "pass" and result["workaround"] else result
        self.log(f"[{self.spec.name}] {result['ref']} variant {result['variant']} {result['format']}{src}: "
                 f"{result['verdict']} — {last['message'][:160]}")

    # -- the pipeline -------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        cells = plan(self.config, refs=self.opts.refs, variants=self.opts.variants, formats=self.opts.formats,
                     envs=[self.spec.name])
        cells = shard.select(cells, self.opts.shard)
        self.source_url = choose_source(self.config, self.opts.cache, self.log)
        # A local repository (the stand-in mirror above all, which is rebuilt when its table changes) is cheap to
        # fetch, and a stale clone of it would resolve tags to old commits.
        self.fetch = self.opts.fetch or is_local_repo(self.source_url)
        by_ref: dict[str, list[Cell]] = defaultdict(list)
        for cell in cells:
            by_ref[cell.ref].append(cell)
        done: list[dict[str, Any]] = []
        pending: list[tuple[Checkout, dict[str, list[dict[str, Any]]]]] = []
        for ref, ref_cells in by_ref.items():  # git work stays serial: one clone, one lock
            checkout, kept, todo = self.prepare_ref(ref, ref_cells)
            done += kept
            if checkout and todo:
                pending.append((checkout, todo))
        # Every step from here runs in env subprocesses, mostly single-threaded Python (tracing, the dynamo
        # exporter), so independent batches run side by side, one per core by default.
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.opts.jobs)) as pool:
                checkpoints = dict(zip((c.ref for c, _ in pending),
                                       pool.map(lambda p: self.checkpoint(p[0]), pending)))
                batches = [(checkout, variant, batch) for checkout, todo in pending for variant, batch in todo.items()]
                for finished in pool.map(lambda b: self.claim(*b, checkpoints[b[0].ref]), batches):
                    done += finished
        finally:
            self.workers.close()
        return done

    def prepare_ref(self, ref: str, cells: list[Cell]) -> tuple[Checkout | None, list[dict[str, Any]],
                                                                 dict[str, list[dict[str, Any]]]]:
        """Check the ref out; keep the results whose inputs did not change; start fresh results for the rest."""
        t0 = time.monotonic()
        try:
            checkout = get_checkout(self.source_url, ref, cache=self.opts.cache, fetch=self.fetch)
        except HarnessError as exc:
            return None, [self.fail_all(cell, None, "checkout", str(exc)) for cell in cells], {}
        checkout_s = round(time.monotonic() - t0, 3)
        if not (checkout.path / "models" / "yolo.py").is_file():
            message = (f"source: {checkout.url} at {ref} ({checkout.commit[:12]}) has no models/yolo.py: not a YOLOv5 "
                       f"tree — point [source] repo (or --repo) at ultralytics/yolov5 or a fork of it")
            return checkout, [self.fail_all(cell, checkout, "checkout", message, "not YOLOv5") for cell in cells], {}
        kept: list[dict[str, Any]] = []
        todo: dict[str, list[dict[str, Any]]] = defaultdict(list)  # variant -> fresh results to fill in
        for cell in cells:
            key = self.inputs_key(cell, checkout.commit)
            path = results.result_path(self.opts.reports, cell.id)
            old = results.read_result(path) if path.exists() else None
            if old and old.get("inputs_key") == key and not self.opts.force:
                self.log(f"[{self.spec.name}] {cell.id}: unchanged, kept ({old.get('verdict')})")
                kept.append(old)
                continue
            result = self.base_result(cell, checkout)
            result["inputs_key"] = key
            result["timings"]["checkout"] = checkout_s
            todo[cell.variant].append(result)
        return checkout, kept, todo

    def claim(self, checkout: Checkout, variant: str, batch: list[dict[str, Any]],
              checkpoint: tuple[Path | None, float, dict[str, str] | None]) -> list[dict[str, Any]]:
        """finish_variant under the lock of this ref x variant, which every run on this cache takes for it: the
        patched tree (shared by envs), the job and cell work directories are then never used by two runs at once.
        Cells another run finished while this one waited (same inputs) are kept, not redone."""
        what = f"{checkout.ref} ({checkout.commit[:12]}) variant {variant}"
        with lock.hold(lock.lock_path(self.opts.cache, "cells", checkout.commit, variant), what, self.log):
            kept, todo = [], []
            for result in batch:
                path = results.result_path(self.opts.reports, result["cell"])
                old = results.read_result(path) if path.exists() else None
                # Made by another run after this one started, from the same inputs: fresh even under --force.
                if (old and old.get("inputs_key") == result["inputs_key"]
                        and float(old.get("created") or 0) >= self.started):
                    self.log(f"[{self.spec.name}] {result['cell']}: done by another run meanwhile, kept "
                             f"({old.get('verdict')})")
                    kept.append(old)
                else:
                    todo.append(result)
            return kept + (self.finish_variant(checkout, variant, todo, checkpoint) if todo else [])

    def finish_variant(self, checkout: Checkout, variant: str, batch: list[dict[str, Any]],
                       checkpoint: tuple[Path | None, float, dict[str, str] | None]) -> list[dict[str, Any]]:
        weights, seconds, failure = checkpoint
        for result in batch:
            result["timings"]["checkpoint"] = seconds
        if failure or weights is None:
            for result in batch:
                result.update(stage="checkpoint", **(failure or {}))
                result["cause"] = causes.name_of(result["message"], result["log_tail"])
        else:
            self.run_variant(checkout, variant, weights, batch)
        for result in batch:
            self.save(result)
        return batch

    def fail_all(self, cell: Cell, checkout: Checkout | None, stage: str, message: str,
                 cause: str | None = None) -> dict[str, Any]:
        result = self.base_result(cell, checkout)
        result.update(stage=stage, message=message, cause=cause or stage)
        self.save(result)
        return result

    def checkpoint(self, checkout: Checkout) -> tuple[Path | None, float, dict[str, str] | None]:
        """Build (or reuse) this ref's checkpoint in this env, from the unpatched tree: once per ref x env."""
        model = self.config.model
        if model.weights:
            return Path(model.weights).resolve(), 0.0, None
        # Keyed by everything it depends on: the commit, the env, the model config and the harness's own code.
        fingerprint = harness_fingerprint(CHECKPOINT_SOURCES)
        folder = self.opts.cache / "checkpoints" / checkout.commit / f"{self.spec.key()}-{fingerprint[:8]}"
        weights = folder / f"{Path(model.cfg).stem}-nc{model.nc}-seed{model.seed}.pt".lower()
        if weights.exists():
            return weights, 0.0, None
        # One builder per checkpoint across runs: a second run waits, then finds it built.
        with lock.hold(lock.lock_path(self.opts.cache, "checkpoint", str(weights)),
                       f"checkpoint of {checkout.ref} ({weights.name})", self.log):
            if weights.exists():
                return weights, 0.0, None
            job = {"task": "checkpoint", "tree": str(checkout.path), "cfg": model.cfg, "nc": model.nc,
                   "seed": model.seed, "weights_out": str(weights)}
            folder.mkdir(parents=True, exist_ok=True)
            answer, ran = self.workers.run_worker(self.python, job, workdir=folder / "job",
                                                  timeout=self.config.timeouts.checkpoint)
        if answer and answer.get("ok") and weights.exists():
            return weights, round(ran.seconds, 3), None
        message = (answer or {}).get("error", {}).get("message") or ran.failure() or "no checkpoint written"
        return None, round(ran.seconds, 3), {"message": f"checkpoint: {message}", "log_tail": ran.tail()}

    def run_variant(self, checkout: Checkout, variant: str, weights: Path, batch: list[dict[str, Any]]) -> None:
        """Patch once for the variant, export + verify every format out of the box, then rerun the cells that broke
        for a cause with a known workaround, with it. Top-level fields hold the out-of-the-box attempt."""
        t = time.monotonic()
        patched = self.opts.cache / "patched" / checkout.commit / variant
        try:
            with PATCH_LOCK:  # CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth mismatch")
                diff = apply_patch(checkout.path, patched, variant, checkout.ref)
        except HarnessError as exc:
            # A Detect.forward no row of the patcher's table knows (a release older or newer than the table): a clear
            # "unsupported" cell with the fix, not a crash; the ref's other variants and refs go on.
            unsupported = isinstance(exc, PatchError) and "not recognised" in str(exc)
            message = (f"{exc} — unsupported: add this Detect.forward shape to harness/patch.py (_SHAPES) or drop "
                       f"the ref" if unsupported else str(exc))
            for result in batch:
                result.update(stage="patch", message=message, cause="unsupported" if unsupported else "patch")
            return
        for result in batch:
            result["patch_diff"] = diff
            result["timings"]["patch"] = round(time.monotonic() - t, 3)
            cell_dir = self.cellroot / result["cell"]  # the applied diff is kept with the cell's artifacts
            cell_dir.mkdir(parents=True, exist_ok=True)
            (cell_dir / "patch.diff").write_text(diff)
        first = self.attempt(patched, weights, batch, "out-of-the-box", causes.Workaround("none"))
        for result in batch:
            outcome = first[result["cell"]]
            # Keep the per-ref stages (checkout, checkpoint, patch) next to the attempt's own.
            result.update({**outcome, "timings": {**result["timings"], **outcome.get("timings", {})}})
        judged = {r["cell"]: (r, self.name_cause(r, with_hint=True)) for r in batch}  # cell -> (attempt, its cause)
        start = {cell: cause for cell, (_, cause) in judged.items()}  # why each cell failed out of the box
        latest: dict[str, dict[str, Any]] = {r["cell"]: r for r in batch}
        applied: dict[str, list[causes.Workaround]] = {r["cell"]: [] for r in batch}
        tried: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {r["cell"]: {} for r in batch}  # names -> attempt
        # A chain another variant of this ref found for the same first failure and format is tried whole first.
        borrowed: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        origin: dict[str, tuple[str, list[str]]] = {}  # cell -> (the cell that found its chain, steps skipped)
        for result in batch:
            found = self.learned.get(self.learn_key(result, start[result["cell"]])) if self.opts.learn else None
            if found and result["status"] != "pass":
                names, origin[result["cell"]] = found[0], found[1:]
                borrowed[names].append(result)
                applied[result["cell"]] = [causes.WORKAROUNDS[n] for n in names]
        for names, group in borrowed.items():
            again = self.rerun(patched, weights, group, names)
            for result in group:
                source, skipped = origin[result["cell"]]
                again[result["cell"]].update(learned_from=source, not_tried=skipped)
                latest[result["cell"]] = tried[result["cell"]][names] = again[result["cell"]]
        # Workarounds accumulate: each rerun adds the fix for the cause that stopped the previous attempt, while
        # that cause has one not yet applied (bounded by the size of the table).
        settled: set[str] = set()
        for _ in range(2 * len(causes.WORKAROUNDS) + 1):
            retry: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)  # fixes -> cells
            for result in batch:
                cell, outcome = result["cell"], latest[result["cell"]]
                if judged[cell][0] is not outcome:  # each attempt is judged once
                    judged[cell] = outcome, self.name_cause(outcome, with_hint=False)
                cause, fixes = judged[cell][1], applied[cell]
                if outcome["status"] == "pass" or cell in settled:
                    continue
                if outcome.get("learned_from") and not (cause and cause.workaround and cause.workaround not in fixes):
                    # The borrowed chain failed here for a cause it cannot fix: search step by step from the
                    # out-of-the-box failure instead (a shorter chain may work on this variant).
                    fixes.clear()
                    cause = start[cell]
                if not (cause and cause.workaround and cause.workaround not in fixes):
                    continue
                fixes.append(cause.workaround)
                names = tuple(f.name for f in fixes)
                if names in tried[cell]:  # that very chain already ran (borrowed) and failed: it stays the verdict
                    latest[cell] = self.record(result, {**tried[cell][names], "not_tried": []})
                    settled.add(cell)
                else:
                    retry[names].append(result)
            if not retry:
                break
            for names, group in retry.items():
                again = self.rerun(patched, weights, group, names)
                for result in group:
                    latest[result["cell"]] = tried[result["cell"]][names] = again[result["cell"]]
        self.learn(batch, start, applied, latest)

    def rerun(self, patched: Path, weights: Path, group: list[dict[str, Any]],
              names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Run ``group`` again with the workarounds ``names`` applied together; see record."""
        fix = causes.combine([causes.WORKAROUNDS[n] for n in names])
        try:  # a pin workaround runs in a sibling env with those pins, built once into the cache
            python = ensure_env(derive(self.spec, fix.pins), self.opts.cache, log=self.log) if fix.pins else None
            again = self.attempt(patched, weights, group, "workaround", fix, python=python)
        except EnvError as exc:
            again = {r["cell"]: self.outcome(stage="export", message=str(exc)) for r in group}
        described = {"name": fix.name, "env": fix.env, "shims": list(fix.shims), "opset": fix.opset,
                     "pins": fix.pins, "hint": fix.hint, "cause": None}
        return {r["cell"]: self.record(r, {**described, **again[r["cell"]]}) for r in group}

    @staticmethod
    def record(result: dict[str, Any], attempt: dict[str, Any]) -> dict[str, Any]:
        """Make ``attempt`` the cell's ``workaround`` (its latest rerun); the one it replaces moves to
        ``workaround.earlier``, in the order they ran."""
        earlier = result["workaround"]
        history = (earlier or {}).get("earlier", []) + ([{k: earlier.get(k) for k in (
            "name", "status", "stage", "cause", "message", "learned_from")}] if earlier else [])
        history = [h for h in history if h["name"] != attempt["name"]]  # an attempt made final again is not earlier
        result["workaround"] = {**attempt, "earlier": history}
        return result["workaround"]

    # -- workaround chains learned within a ref x env ------------------------------------------------------------
    @staticmethod
    def learn_key(result: dict[str, Any], cause: causes.Cause | None) -> tuple[str, str, str] | None:
        """Cells of one ref (commit) and format that fail out of the box for the same cause: the other variants of a
        ref share everything a workaround acts on (the checkpoint load, the exporter call), only Detect differs."""
        return (result["commit"], result["format"], cause.name) if cause and cause.workaround else None

    def learn(self, batch: list[dict[str, Any]], start: dict[str, causes.Cause | None],
              applied: dict[str, list[causes.Workaround]], latest: dict[str, dict[str, Any]]) -> None:
        """Remember each chain of two or more workarounds found step by step that passed: the same ref's next
        variants try it whole, skipping the intermediate attempts that failed here (named in ``not_tried``)."""
        for result in batch:
            fixes, outcome = applied[result["cell"]], latest[result["cell"]]
            key = self.learn_key(result, start[result["cell"]])
            if key and len(fixes) > 1 and outcome["status"] == "pass" and not outcome.get("learned_from"):
                steps = [" + ".join(f.name for f in fixes[:i]) for i in range(1, len(fixes))]
                self.learned.setdefault(key, (tuple(f.name for f in fixes), result["cell"], steps))

    @staticmethod
    def name_cause(outcome: dict[str, Any], with_hint: bool) -> causes.Cause | None:
        """Name why an attempt did not pass (setting its ``cause``), and turn a pass whose ONNX opset differs from
        the one the script asked for into a fail: the file works here but not for a compiler bound to that opset."""
        if outcome["status"] == "pass":
            export = outcome.get("export") or {}
            log = Path(export["log"]) if export.get("log") else None
            mismatch = causes.opset_mismatch(export, log.read_text(errors="replace") if log and log.exists() else "")
            if not mismatch:
                return None
            outcome.update(status="fail", stage="export", message=f"{mismatch}; {outcome['message']}")
        cause = causes.classify(outcome["message"], outcome["log_tail"])
        outcome["cause"] = cause.name if cause else causes.name_of(outcome["message"], outcome["log_tail"])
        if with_hint and cause:
            outcome["message"] = f"{cause.hint}: {outcome['message']}"
        return cause

    def attempt(self, tree: Path, weights: Path, batch: list[dict[str, Any]], label: str,
                fix: causes.Workaround, python: Path | None = None) -> dict[str, dict[str, Any]]:
        """Export + verify a batch of cells (same ref, variant) in as few worker processes as faults allow.

        One worker (a child of the env's warm process, torch already imported: harness/warm.py) imports the ref once
        and runs the cells in turn. If it dies or overruns a stage, the cell in flight is charged (error, its stage,
        the reason) and a fresh child carries on with the rest.
        """
        outcomes: dict[str, dict[str, Any]] = {}
        specs = {}
        try:
            shape = exporters.detect_exporter(tree, batch[0]["ref"])
        except HarnessError as exc:
            return {r["cell"]: self.outcome(stage="export", message=str(exc)) for r in batch}
        for result in batch:
            workdir = self.cellroot / result["cell"] / label
            if workdir.exists():
                shutil.rmtree(workdir)
            workdir.mkdir(parents=True)
            local = workdir / WEIGHTS_NAME
            try:
                os.link(weights, local)
            except OSError:
                shutil.copyfile(weights, local)
            result["artifacts_dir"] = str(workdir.parent)
            fmt = result["format"]
            specs[result["cell"]] = {
                "id": result["cell"], "variant": result["variant"], "format": fmt, "workdir": str(workdir),
                "argv": exporters.command(shape, tree, WEIGHTS_NAME, self.config.model.imgsz, fmt, fix.opset),
                "suffixes": list(exporters.ARTIFACT_SUFFIXES[fmt]),
                "opset_requested": exporters.requested_opset(shape, tree, fix.opset) if fmt != "torchscript" else None,
            }
        pending = list(specs)
        round_no = 0
        while pending:
            round_no += 1
            slug = re.sub(r"[^A-Za-z0-9]+", "-", fix.name)[:60]
            jobdir = self.workroot / "jobs" / f"{Path(tree).parent.name[:12]}-{Path(tree).name}-{slug}-{round_no}"
            if jobdir.exists():
                shutil.rmtree(jobdir)
            progress_file = jobdir / "progress.jsonl"
            job = {"task": "attempt", "tree": str(tree), "weights": str(weights), "imgsz": self.config.model.imgsz,
                   "atol": self.config.tolerances.atol, "rtol": self.config.tolerances.rtol,
                   "progress": str(progress_file), "shims": list(fix.shims),
                   "cells": [specs[c] for c in pending]}
            watch = StageWatch(progress_file, self.config.timeouts)
            jobdir.mkdir(parents=True)
            progress_file.touch()
            total = sum(self.config.timeouts.export + self.config.timeouts.verify for _ in pending)
            _, ran = self.workers.run_worker(python or self.python, job, workdir=jobdir, timeout=total,
                                             env_extra=fix.env, watchdog=watch.overrun)
            events = watch.events()
            finished = {e["cell"]: e for e in events if e["event"] == "cell"}
            for cell_id, event in finished.items():
                outcomes[cell_id] = self.judge_event(specs[cell_id], event)
            pending = [c for c in pending if c not in finished]
            if pending and ran.failure():
                # The worker died or overran: charge the cell in flight, then carry on with a fresh worker.
                in_flight, stage = watch.current() or (pending[0], "export")
                reason = f"worker {ran.failure()} during {stage}" + (
                    f" (stage timeout {watch.limit(stage):.0f} s)" if watch.overran else "")
                outcomes[in_flight] = self.outcome(stage=stage, message=reason, log_tail=self.cell_log(
                    specs[in_flight], ran))
                pending.remove(in_flight)
            elif pending:
                for cell_id in pending:  # answered without touching them: the worker itself is broken
                    outcomes[cell_id] = self.outcome(stage="export", message="worker stopped early",
                                                     log_tail=ran.tail())
                pending = []
        return outcomes

    @staticmethod
    def outcome(**fields: Any) -> dict[str, Any]:
        base = {"status": "error", "stage": "export", "message": "", "log_tail": "", "outputs": [],
                "expected_outputs": None, "parity": [], "export": None}
        return {**base, **fields}

    @staticmethod
    def cell_log(spec: dict[str, Any], ran: proc.ProcResult) -> str:
        log = Path(spec["workdir"]) / "export.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return proc.tail(text + "\n" + ran.text())

    def judge_event(self, spec: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        """Turn one finished cell's measurements into its outcome (status, stage, message, details)."""
        export = event["export"]
        workdir = Path(export["workdir"])  # another cell's, when both ran the very same export command
        log = workdir / "export.log"
        log_text = log.read_text(errors="replace") if log.exists() else ""
        produced = [workdir / name for name in export["produced"]]
        info = {"argv": spec["argv"], "exit_code": export["exit_code"], "seconds": round(export["seconds"], 3),
                "shared_with": None if workdir == Path(spec["workdir"]) else str(workdir),
                "opset_requested": spec["opset_requested"], "opset_written": None,
                "files": [{"name": p.name, "bytes": p.stat().st_size} for p in produced if p.exists()],
                "log": str(log)}
        out = self.outcome(export=info, log_tail=proc.tail(log_text), timings={"export": info["seconds"]})
        if not exporters.artifacts(produced, spec["format"]):
            reason = exporters.failure_line(log_text, spec["format"])
            out["message"] = f"export: no {spec['format']} file written (exit code {export['exit_code']})" + (
                f": {reason}" if reason else "")
            return out
        if "error" in event:
            err = event["error"]
            out.update(stage=err.get("stage") or "load", message=f"{err.get('stage') or 'load'}: {err['type']}: "
                                                                 f"{err['message']}",
                       log_tail=proc.tail(err.get("traceback", "")))
            return out
        answer = event["verify"]
        out["timings"].update({k: round(v, 3) for k, v in answer["timings"].items()})
        if "onnx" in answer:
            info["opset_written"] = answer["onnx"]["opset"]
            info["onnx"] = answer["onnx"]
        out["detect"], out["image"] = answer["detect"], answer["image"]
        verdict = judge(spec["variant"], spec["format"], answer, self.config.tolerances)
        out.update(status=verdict.status, stage=verdict.stage, message=verdict.message, outputs=verdict.outputs,
                   expected_outputs=verdict.expected_outputs, parity=verdict.parity)
        return out


class StageWatch:
    """Reads a worker's progress file: which cell and stage it is in, since when, and whether that overran."""

    def __init__(self, progress: Path, timeouts: Timeouts):
        self.progress, self.timeouts = progress, timeouts
        self.overran = False
        self._seen = 0
        self._current: tuple[str, str] | None = None
        self._since = time.monotonic()

    def limit(self, stage: str) -> float:
        return self.timeouts.export if stage == "export" else self.timeouts.verify

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.progress.read_text().splitlines() if self.progress.exists() else []:
            try:
                found.append(json.loads(line))
            except ValueError:
                break  # a line cut by a crash: everything before it holds
        return found

    def current(self) -> tuple[str, str] | None:
        events = self.events()
        if events and events[-1]["event"] == "stage":
            return events[-1]["cell"], events[-1]["stage"]
        return None

    def overrun(self) -> bool:
        events = self.events()
        if len(events) != self._seen:
            self._seen, self._since = len(events), time.monotonic()
        now = self.current()
        stage = now[1] if now else "export"  # before the first event: imports, charged like an export
        self.overran = time.monotonic() - self._since > self.limit(stage)
        return self.overran


FOLDER_MARK = "results-folder.txt"  # in each cell root: the results folder its artifacts belong to


def cell_root(workroot: Path, reports: Path) -> Path:
    """The work folder for the cells of the results in ``reports`` (marked with that path), after deleting those
    of results folders that no longer exist: a deleted folder's artifacts (~2 GB per env of a full matrix) have
    no result left to point at them."""
    folder = reports.resolve()
    for mark in workroot.glob(f"*/{FOLDER_MARK}"):
        try:
            gone = not Path(mark.read_text().strip()).exists()
        except OSError:
            continue
        if gone:
            shutil.rmtree(mark.parent, ignore_errors=True)
    root = workroot / hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    root.mkdir(parents=True, exist_ok=True)
    (root / FOLDER_MARK).write_text(f"{folder}\n")
    return root


def run_env(config: Config, env: str, opts: Options, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run one env's cells. Inputs that would fail late are checked first (harness.preflight). Ctrl-C or SIGTERM
    kills the steps in flight and raises KeyboardInterrupt: every result saved before stays, and a rerun redoes only
    the rest. A result that cannot be written stops the run with that HarnessError."""
    preflight.check_reports(opts.reports)
    preflight.check_weights(config.model.weights, str(config.path))
    preflight.check_source(config.source.repo, opts.cache, config.source.fallback)
    if config.model.weights:
        log(f"weights: {config.model.weights} is a pickle: only the env's processes load it, never this one — use "
            f"files you trust (README, Security)")
    proc.STOP.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        env_run = EnvRun(config, env, opts, log)
        try:
            return env_run.run()
        except KeyboardInterrupt:
            if env_run.fatal:  # the other steps were stopped because of it: report the cause, not the stop
                raise env_run.fatal from None
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    proc.STOP.set()  # steps in flight die at their next poll; nothing after this is saved
    raise KeyboardInterrupt(signal.Signals(signum).name)


def summary(done: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for result in done:
        counts[result["verdict"].split(":")[0]] += 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no cells"


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
