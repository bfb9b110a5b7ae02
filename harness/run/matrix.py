"""Running the matrix for one env: the supervisor. Plan the cells, keep the results whose inputs did not change, take
the locks, build checkpoints, hand each ref x variant batch to harness/run/variant.py, save every result.

It runs in the harness's own Python and drives every env-side step through harness.envs.proc, so YOLOv5 code, torch and
user pickles never load here. Each step that fails becomes a result with the stage and a message; only a broken
config, an unusable env or a results folder that cannot be written stops the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

from harness import __version__, prog
from harness.axes import VARIANTS
from harness.config import Config, EnvSpec, is_local_repo
from harness.envs import bytecode, lock, proc, sandbox
from harness.envs.build import ensure_env, extend, ref_packages
from harness.envs.warm import WarmPool
from harness.errors import EnvError, HarnessError, SourceError
from harness.files import write_json
from harness.results import model as results
from harness.results.model import Attempt, CellResult, CheckpointNote
from harness.results.verdict import OUTCOMES
from harness.run import artifacts, preflight, shard
from harness.run.batch import EnvContext
from harness.run.plan import Cell, plan
from harness.run.progress import Progress, outer_from_env
from harness.run.variant import Known, learned_path, run_variant
from harness.sources.checkout import Checkout, get_checkout, is_reachable, repo_label
from harness.verify import causes
from harness.worker import FONTS
from harness.worker.protocol import CheckpointAnswer, CheckpointJob, ProbeAnswer, ProbeJob
from harness.worker.serve import PRELOAD

Log = Callable[[str], None]


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
    threads: int | None = None  # intra-op threads per job (torch, ONNX Runtime); None: the cores shared among jobs
    shard: tuple[int, int] | None = None  # (k, n): only block k of n of the planned cells (harness.run.shard)
    learn: bool = True  # try whole a chain another variant of the same ref found, in this or an earlier run
    options: tuple[str, ...] = ()  # export options applied to every attempt (harness/verify/causes.py EXPORT_OPTIONS)
    # A caller that makes many runs (an upgrade: both sides, then bisect probes) says the sandbox line once itself,
    # and reports each probe in one line of its own: these turn the run's own lines off.
    announce: bool = True  # the sandbox (and weights) lines
    cell_lines: bool = True  # one progress line per cell


# The harness code a cell's result depends on, beyond what its inputs_key names by value (commit, pins, model,
# tolerances): the code that runs in the env (worker/), the Detect rewrite, the exporter call, the causes and
# workarounds tried, the search over them, how an attempt is run and judged (batch.py, variant.py, verify.py).
# Everything else (config parsing, git, env building,
# scheduling, reporting) acts through those values or does not change a measurement, so editing it keeps every
# result; a change there that does alter results must bump RESULTS_REVISION, which is hashed too.
# Not the release (harness.__version__): a release that changes no measurement keeps every cached result.
RESULTS_REVISION = "0.1.0"
FINGERPRINT_SOURCES = ("worker", "patch/detect.py", "run/exporters.py", "verify/causes.py", "run/search.py",
                       "run/batch.py", "run/variant.py", "verify/judge.py")
# A built checkpoint depends on one file of that code, and on the ref's model code: these folders of its tree.
CHECKPOINT_SOURCES = ("worker/checkpoint.py",)
CHECKPOINT_TREE = ("models", "utils")
PROBE_FILE = "harness-probe.json"  # beside the env's build marker: the versions it imports, probed once
FOLDER_MARK = "results-folder.txt"  # in each cell root: the results folder its artifacts belong to
# weights, seconds to build, failure, and how the harness built it when not as the ref's train.py does
# (results.CheckpointNote): a note on the checkpoint, never a workaround of the export.
Checkpoint = tuple[Path | None, float, dict[str, str] | None, CheckpointNote | None]


def harness_fingerprint(sources: tuple[str, ...] = FINGERPRINT_SOURCES) -> str:
    """Hash of the harness code a result depends on (see FINGERPRINT_SOURCES): results made by other code are not
    reused, and edits elsewhere in the harness do not rerun the matrix."""
    root = Path(__file__).parents[1]  # harness/
    digest = hashlib.sha256(RESULTS_REVISION.encode())
    for source in sources:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def tree_digest(root: Path, folders: tuple[str, ...]) -> str:
    """Hash of every file under ``folders`` of a checkout (paths and bytes): equal trees, equal digests."""
    digest = hashlib.sha256()
    for folder in folders:
        for file in sorted((root / folder).rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:20]


def choose_source(config: Config, cache: Path, log: Log) -> str:
    """The repository to run: the configured one, or the PyPI stand-in mirror when that is unreachable."""
    url = config.source.repo
    if is_local_repo(url) or is_reachable(url):
        return url
    if config.source.fallback != "mirror":
        raise SourceError(f"source: {url} is unreachable — check the network, or set fallback = \"mirror\" in "
                          f"[source] or YOLOV5_REPO to a local mirror ({prog.command('mirror')})")
    from harness.sources.mirror import build_mirror, default_mirror_dir

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


def probe_env(python: Path, workdir: Path, config_dir: Path, jail: sandbox.Jail | None = None) -> dict[str, Any]:
    """The versions the env really imports. An env's packages do not change after it is built (its directory is
    keyed by its pins), so the answer is kept in the env and the probe (a torch import) runs once per env build."""
    cached = python.parent.parent / PROBE_FILE
    key = harness_fingerprint(("worker/__main__.py",))
    if cached.is_file() and all((config_dir / font).is_file() for font in FONTS):
        try:
            stored = json.loads(cached.read_text())
            if stored.get("key") == key:
                return dict(stored["versions"])
        except (ValueError, KeyError):
            pass
    job: ProbeJob = {"task": "probe", "yolov5_config_dir": str(config_dir)}
    got, ran = proc.run_worker(python, job, workdir=workdir, watch=proc.Watch(300), jail=jail)
    answer = cast("ProbeAnswer | None", got)
    if not answer or not answer.get("ok"):
        raise HarnessError(f"env: {python} cannot run the harness worker ({ran.failure() or ''}: "
                           f"{ran.tail(3)}) — rebuild the env (delete {python.parent.parent})")
    write_json(cached, {"key": key, "versions": answer["versions"]})
    return dict(answer["versions"])


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


class EnvRun:
    """The cells of one env: their reuse, locks, checkpoints and saving; the work goes to harness/run/variant.py."""

    def __init__(self, config: Config, env: str, opts: Options, log: Log = print, workers: WarmPool | None = None,
                 box: sandbox.Box | None = None):
        self.config, self.opts, self.log = config, opts, log
        self.spec = config.envs[env]
        self.box = box or sandbox.Box()
        self.own_workers = workers is None  # a caller's pool (many short runs, e.g. bisect probes) stays open
        self._workers = workers
        self._ctx: EnvContext | None = None
        self._ctx_lock = threading.Lock()
        self.started = time.time()  # results created after this by another run are that run's work (see claim)
        self.fatal: HarnessError | None = None  # a failure that stops the run (results not writable)
        self.config_dir = opts.cache / "yolov5-config"  # YOLOV5_CONFIG_DIR: holds the offline Arial.ttf
        self._versions: dict[str, Any] | None = None
        self.fingerprint = harness_fingerprint()
        self.known = Known(learned_path(opts.cache, self.spec.key()))
        self.source_url = config.source.repo
        self.progress = Progress(self.spec.name, 0, log)  # sized once the cells are planned (run)

    @property
    def ctx(self) -> EnvContext:
        """The env and what its steps share, built on first need: a run whose cells are all unchanged (a rerun, a CI
        job that restored its results) builds no env and starts no process."""
        with self._ctx_lock:
            if self._ctx is None:
                spec, opts = self.spec, self.opts
                with lock.hold(lock.lock_path(opts.cache, "env", spec.name, spec.key()), f"env {spec.name}", self.log):
                    python = ensure_env(spec, opts.cache, log=self.log)
                workroot = opts.cache / "work" / spec.name
                # Env-side jobs run in children of one warm process per env (torch imported once): harness/envs/warm.py.
                workers = self._workers or warm_pool(self.config, spec.name, opts.cache, self.box)
                cores = os.cpu_count() or 1
                threads = opts.threads if opts.threads is not None else max(1, cores // max(1, opts.jobs))
                # Cell artifacts (exports, logs) per results folder: a result points at its files, so a run that
                # writes its results elsewhere on the same cache must not overwrite them.
                self._ctx = EnvContext(self.config, spec, python, opts.cache, workroot,
                                       cell_root(workroot, opts.reports), workers, self.log, threads or None,
                                       tuple(causes.EXPORT_OPTIONS[name] for name in opts.options))
            return self._ctx

    @property
    def versions(self) -> dict[str, Any]:
        """Probed on first need: a run whose cells are all unchanged never starts the env's Python."""
        if self._versions is None:
            name = self.spec.name
            with lock.hold(lock.lock_path(self.opts.cache, "probe", name), f"probe of {name}"):
                workdir = self.ctx.workroot / "probe"
                jail = sandbox.step_jail(self.box, self.ctx.python, workdir=workdir, write=[self.config_dir],
                                         workroot=self.ctx.workroot)
                bytecode.ensure(self.ctx.python, PRELOAD, jail, workdir)  # the probe imports most of them
                self._versions = probe_env(self.ctx.python, workdir, self.config_dir, jail)
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
        parts += [repr(self.opts.options)] if self.opts.options else []  # without: the keys results already hold
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]

    def new_result(self, cell: Cell, checkout: Checkout | None) -> CellResult:
        return CellResult(
            cell=cell.id, ref=cell.ref, commit=checkout.commit if checkout else None,
            source=source_label(checkout) if checkout else repo_label(self.source_url),
            repo=checkout.url if checkout else self.source_url, standin=checkout.standin if checkout else None,
            env=self.spec.name, pins=self.spec.requirements(), versions=self.versions,
            model=asdict(self.config.model), tolerances=asdict(self.config.tolerances),
            variant=cell.variant, format=cell.format, options=list(self.opts.options),
            attempts=[Attempt(stage="checkout")],
            harness_version=__version__, harness_fingerprint=self.fingerprint, created=time.time(),
            sandbox=self.box.label)

    def stored(self, cell_id: str) -> CellResult | None:
        path = results.result_path(self.opts.reports, cell_id)
        return results.read_result(path) if path.exists() else None

    def save(self, result: CellResult) -> None:
        proc.check_interrupt(f"before saving {result.cell}")  # a cell whose steps were killed is not a result
        if any(attempt.cause == artifacts.DISK_FULL for attempt in result.attempts):
            # Not a verdict: every next cell would fail the same way. Stop with one line; what is saved stays.
            folder = Path(result.artifacts_dir or self.opts.cache / "work" / self.spec.name)
            exc = HarnessError(artifacts.disk_full(folder, artifacts.free_mb(folder)))
            self.fatal = self.fatal or exc
            proc.STOP.set()
            raise exc
        result.created = time.time()  # when it was made: merges and concurrent runs keep the newer one
        try:
            results.save_result(self.opts.reports, result)
        except HarnessError as exc:
            self.fatal = self.fatal or exc
            proc.STOP.set()  # the disk is full or gone: stop every step now rather than compute more to lose
            raise
        self.progress.cell(result)  # said already when its search ended; a cell that stopped early is said here

    # -- the pipeline -------------------------------------------------------------------------------------------
    def run(self) -> list[CellResult]:
        cells = plan(self.config, refs=self.opts.refs, variants=self.opts.variants, formats=self.opts.formats,
                     envs=[self.spec.name])
        cells = shard.select(cells, self.opts.shard)
        self.progress = Progress(self.spec.name, len(cells), self.log if self.opts.cell_lines else _silent,
                                 outer_from_env())
        self.source_url = choose_source(self.config, self.opts.cache, self.log)
        # A local repository (the stand-in mirror above all, which is rebuilt when its table changes) is cheap to
        # fetch, and a stale clone of it would resolve tags to old commits.
        fetch = self.opts.fetch or is_local_repo(self.source_url)
        by_ref: dict[str, list[Cell]] = defaultdict(list)
        for cell in cells:
            by_ref[cell.ref].append(cell)
        done: list[CellResult] = []
        pending: list[tuple[Checkout, dict[str, list[CellResult]]]] = []
        for ref, ref_cells in by_ref.items():  # git work stays serial: one clone, one lock
            checkout, kept, todo = self.prepare_ref(ref, ref_cells, fetch)
            done += kept
            if checkout and todo:
                pending.append((checkout, todo))
        # Every step from here runs in env subprocesses, mostly single-threaded Python (tracing, the dynamo
        # exporter), so independent batches run side by side, one per core by default.
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.opts.jobs)) as pool:
                checkpoints = dict(zip((c.ref for c, _ in pending),
                                       pool.map(lambda p: self.checkpoint(p[0]), pending), strict=True))
                # Variant by variant across refs: a ref's first variant has finished (and shared what it learnt, see
                # harness/run/variant.py Known) before its next one starts, and refs hold different locks side by side.
                batches = sorted(((checkout, variant, batch) for checkout, todo in pending
                                  for variant, batch in todo.items()), key=lambda b: VARIANTS.index(b[1]))
                for finished in pool.map(lambda b: self.claim(b[0], b[1], b[2], checkpoints[b[0].ref]), batches):
                    done += finished
        finally:
            if self.own_workers and self._ctx:
                self._ctx.workers.close()
        return done

    def prepare_ref(self, ref: str, cells: list[Cell], fetch: bool) -> tuple[Checkout | None, list[CellResult],
                                                                              dict[str, list[CellResult]]]:
        """Check the ref out; keep the results whose inputs did not change; start fresh results for the rest."""
        t0 = time.monotonic()
        try:
            checkout = get_checkout(self.source_url, ref, cache=self.opts.cache, fetch=fetch)
        except HarnessError as exc:
            return None, [self.fail_all(cell, None, "checkout", str(exc)) for cell in cells], {}
        checkout_s = round(time.monotonic() - t0, 3)
        if not (checkout.path / "models" / "yolo.py").is_file():
            message = (f"source: {checkout.url} at {ref} ({checkout.commit[:12]}) has no models/yolo.py: not a YOLOv5 "
                       f"tree — point [source] repo (or --repo) at ultralytics/yolov5 or a fork of it")
            return checkout, [self.fail_all(cell, checkout, "checkout", message, "not YOLOv5") for cell in cells], {}
        kept: list[CellResult] = []
        todo: dict[str, list[CellResult]] = defaultdict(list)  # variant -> fresh results to fill in
        for cell in cells:
            key = self.inputs_key(cell, checkout.commit)
            old = self.stored(cell.id)
            if old and old.inputs_key == key and not self.opts.force:
                self.progress.cell(old, kept=True)
                kept.append(old)
                continue
            result = self.new_result(cell, checkout)
            result.inputs_key = key
            result.timings["checkout"] = checkout_s
            todo[cell.variant].append(result)
        return checkout, kept, todo

    def claim(self, checkout: Checkout, variant: str, batch: list[CellResult],
              checkpoint: Checkpoint) -> list[CellResult]:
        """finish_variant under the lock of this ref x variant, which every run on this cache takes for it: the
        patched tree (shared by envs), the job and cell work directories are then never used by two runs at once.
        Cells another run finished while this one waited (same inputs) are kept, not redone."""
        what = f"{checkout.ref} ({checkout.commit[:12]}) variant {variant}"
        with lock.hold(lock.lock_path(self.opts.cache, "cells", checkout.commit, variant), what, self.log):
            kept, todo = [], []
            for result in batch:
                old = self.stored(result.cell)
                # Made by another run after this one started, from the same inputs: fresh even under --force.
                if old and old.inputs_key == result.inputs_key and old.created >= self.started:
                    self.log(f"[{self.spec.name}] {result.cell}: done by another run meanwhile")
                    self.progress.cell(old, kept=True)
                    kept.append(old)
                else:
                    todo.append(result)
            return kept + (self.finish_variant(checkout, variant, todo, checkpoint) if todo else [])

    def finish_variant(self, checkout: Checkout, variant: str, batch: list[CellResult],
                       checkpoint: Checkpoint) -> list[CellResult]:
        weights, seconds, failure, note = checkpoint
        for result in batch:
            result.timings["checkpoint"] = seconds
            result.checkpoint = note
        if failure or weights is None:
            for result in batch:
                first = result.first
                first.stage = "checkpoint"
                first.message = (failure or {}).get("message", "")
                first.log_tail = (failure or {}).get("log_tail", "")
                first.cause = causes.name_of(first.message, first.log_tail)
        else:
            run_variant(self.ctx, self.known, checkout, variant, weights, batch, self.opts.learn, self.progress.cell)
        for result in batch:
            self.save(result)
        return batch

    def fail_all(self, cell: Cell, checkout: Checkout | None, stage: str, message: str,
                 cause: str | None = None) -> CellResult:
        result = self.new_result(cell, checkout)
        first = result.first
        first.stage, first.message, first.cause = stage, message, cause or stage  # type: ignore[assignment]
        self.save(result)
        return result

    def checkpoint(self, checkout: Checkout) -> Checkpoint:
        """Build (or reuse) this ref's checkpoint in this env, from the unpatched tree: once per ref x env."""
        model = self.config.model
        if model.weights:
            return Path(model.weights).resolve(), 0.0, None, None
        # Keyed by everything it depends on: the ref's model code (not its commit: the commits a bisect probes share
        # a checkpoint while models/ and utils/ stay the same), the env, the model config and the harness's code.
        fingerprint = harness_fingerprint(CHECKPOINT_SOURCES)
        code = tree_digest(checkout.path, CHECKPOINT_TREE)
        folder = self.opts.cache / "checkpoints" / code / f"{self.spec.key()}-{fingerprint[:8]}"
        weights = folder / f"{Path(model.cfg).stem}-nc{model.nc}-seed{model.seed}.pt".lower()
        sidecar = weights.with_suffix(".json")  # how it was built (a note), beside it for the runs that reuse it
        if weights.exists():
            return weights, 0.0, None, read_note(sidecar)
        # One builder per checkpoint across runs: a second run waits, then finds it built.
        with lock.hold(lock.lock_path(self.opts.cache, "checkpoint", str(weights)),
                       f"checkpoint of {checkout.ref} ({weights.name})", self.log):
            if weights.exists():
                return weights, 0.0, None, read_note(sidecar)
            # Built in the env's work folder (the only place a sandboxed env process writes), then moved into place.
            build = self.ctx.workroot / "checkpoints" / f"{checkout.commit[:12]}-{fingerprint[:8]}"
            shutil.rmtree(build, ignore_errors=True)
            job: CheckpointJob = {"task": "checkpoint", "tree": str(checkout.path), "cfg": model.cfg,
                                  "nc": model.nc, "seed": model.seed, "weights_out": str(build / weights.name)}
            got, ran = self.ctx.workers.run_worker(self.ctx.python, job, workdir=build / "job",
                                                   watch=proc.Watch(self.config.timeouts.checkpoint))
            answer = cast("CheckpointAnswer | None", got)
            if answer and answer.get("ok") and (build / weights.name).is_file():
                folder.mkdir(parents=True, exist_ok=True)
                sidecar.write_text(json.dumps({"built_with": answer.get("built_with")}))
                os.replace(build / weights.name, weights)
        if answer and answer.get("ok") and weights.exists():
            return weights, round(ran.seconds, 3), None, read_note(sidecar)
        message = (answer or {}).get("error", {}).get("message") or ran.failure() or "no checkpoint written"
        return None, round(ran.seconds, 3), {"message": f"checkpoint: {message}", "log_tail": ran.tail()}, None


def read_note(sidecar: Path) -> CheckpointNote | None:
    """The note of a checkpoint the harness built another way than the ref's train.py (None: built as it does)."""
    try:
        built_with = json.loads(sidecar.read_text()).get("built_with")
    except (OSError, ValueError, AttributeError):
        return None
    return CheckpointNote(built_with=str(built_with)) if built_with else None


def warm_pool(config: Config, env: str, cache: Path, box: sandbox.Box | None = None) -> WarmPool:
    """The warm workers of ``env``, boxed (harness/envs/sandbox.py; by default the box [limits] sandbox chooses): pass
    one
    to several run_env calls (and close it after) to import torch once."""
    box = box or sandbox.choose(config.limits.sandbox)
    workroot = cache / "work" / config.envs[env].name
    config_dir = cache / "yolov5-config"
    weights = [Path(config.model.weights).resolve()] if config.model.weights else []
    jails = sandbox.warm_jails(box, cache=cache, workroot=workroot, read=weights, shared=[config_dir])
    return WarmPool(workroot / "warm", {"YOLOV5_CONFIG_DIR": str(config_dir)}, config.limits.memory_mb, jail=jails)


def run_env(config: Config, env: str, opts: Options, log: Log = print,
            workers: WarmPool | None = None) -> list[CellResult]:
    """Run one env's cells. Inputs that would fail late are checked first (harness.run.preflight). Ctrl-C or SIGTERM
    kills the steps in flight and raises KeyboardInterrupt: every result saved before stays, and a rerun redoes only
    the rest. A result that cannot be written stops the run with that HarnessError. ``workers``: the env's warm
    pool when the caller keeps one across runs (see warm_pool); by default each run starts and closes its own."""
    box = sandbox.choose(config.limits.sandbox)  # "required" and none here: stop before anything is touched
    preflight.check_reports(opts.reports)
    preflight.check_weights(config.model.weights, str(config.path))
    preflight.check_source(config.source.repo, opts.cache, config.source.fallback)
    artifacts.check_free(opts.cache / "work" / env, config.artifacts.min_free_mb)
    if opts.announce:
        say_box(config, log, box)
    proc.STOP.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        done: list[CellResult] = []
        for part_config, part_opts in by_packages(config, env, opts, log):
            # A caller's pool runs the configured env's python: a ref that needs more packages gets its own pool.
            env_run = EnvRun(part_config, env, part_opts, log, workers if part_config is config else None, box)
            try:
                done += env_run.run()
            except KeyboardInterrupt:
                if env_run.fatal:  # the other steps were stopped because of it: report the cause, not the stop
                    raise env_run.fatal from None
                raise
        return done
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say_box(config: Config, log: Log, box: sandbox.Box | None = None) -> None:
    """The run's first lines: the sandbox in force, and a warning when the model is a user's pickle."""
    log((box or sandbox.choose(config.limits.sandbox)).describe())
    if config.model.weights:
        log(f"weights: {config.model.weights} is a pickle: only the env's processes load it, never this one — use "
            f"files you trust (docs/security.md)")


def _silent(line: str) -> None:
    """A log that drops its lines (a caller reports them its own way)."""


def by_packages(config: Config, env: str, opts: Options, log: Log) -> list[tuple[Config, Options]]:
    """The env's refs split by the packages their requirements.txt need beyond the env's (harness/envs/build.py
    REF_PACKAGES, e.g. master's `ultralytics`): those refs run in the env extended by them, the others as configured.
    A ref that cannot be checked out stays with the others (its cells say why)."""
    refs = list(dict.fromkeys(cell.ref for cell in plan(config, refs=opts.refs, envs=[env])))
    spec = config.envs[env]
    url = choose_source(config, opts.cache, log)
    groups: dict[EnvSpec, list[str]] = defaultdict(list)
    for ref in refs:
        try:
            checkout = get_checkout(url, ref, cache=opts.cache, fetch=opts.fetch or is_local_repo(url))
        except HarnessError:
            groups[spec].append(ref)
            continue
        needed = ref_packages(checkout.path, spec)
        groups[extended_env(spec, ref, needed, opts.cache, log) if needed else spec].append(ref)

    def in_env(group: EnvSpec) -> Config:
        return config if group == spec else replace(config, envs={**config.envs, env: group})

    if len(groups) <= 1:  # the usual case: every ref in one env, the selection (and its shard) as asked
        return [(in_env(next(iter(groups), spec)), opts)]
    return [(in_env(group), replace(opts, refs=group_refs)) for group, group_refs in groups.items()]


def extended_env(spec: EnvSpec, ref: str, needed: dict[str, tuple[str, ...]], cache: Path, log: Log) -> EnvSpec:
    """``spec`` extended by the packages ``ref`` needs, built now; ``spec`` itself when that cannot be installed there
    (the ref's cells then fail on the import, and harness/verify/causes.py names the package)."""
    pins = ", ".join(pin for group in needed.values() for pin in group)
    extended = extend(spec, needed)
    try:
        with lock.hold(lock.lock_path(cache, "env", extended.name, extended.key()), f"env {spec.name} + {pins}", log):
            ensure_env(extended, cache, log=log)
    except EnvError as exc:
        log(f"[{spec.name}] {ref} needs {', '.join(f'`{name}`' for name in needed)}, which cannot be installed in "
            f"this env ({exc}): its cells run without it")
        return spec
    log(f"[{spec.name}] {ref} needs {', '.join(f'`{name}`' for name in needed)}: its cells run in {spec.name} + {pins}")
    return extended


def _interrupt(signum: int, frame: object) -> None:
    proc.STOP.set()  # steps in flight die at their next poll; nothing after this is saved
    raise KeyboardInterrupt(signal.Signals(signum).name)


def summary(done: list[CellResult]) -> str:
    """Cells per outcome, in the report's order: "10 works, 12 workaround, 2 broken"."""
    counts = Counter(result.outcome() for result in done)
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o]) or "no cells"


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
