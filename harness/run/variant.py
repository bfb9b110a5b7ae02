"""One ref x variant batch: patch once, run every format out of the box, then search workarounds for the cells
that broke (harness/run/search.py decides what to run next; harness/run/batch.py runs it).

A result's ``attempts`` hold the out-of-the-box attempt, then each rerun in the order it ran; the latest decides
(``CellResult.record``). Cells that want the same chain next run together in one worker.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.envs.build import derive, ensure_env
from harness.errors import EnvError, HarnessError, PatchError, UnknownShapeError
from harness.files import write_json
from harness.patch.detect import YOLO_PY, adaptation_of, apply_patch
from harness.results.model import Attempt, CellResult
from harness.run.batch import BatchRunner, EnvContext, failed, name_cause
from harness.run.search import Learned, Reuse, Run, WorkaroundSearch, learn_key
from harness.sources.checkout import Checkout
from harness.verify import causes

ChainKey = tuple[str, str, str]


class LearnedChains:
    """Workaround chains found step by step, keyed by (commit, format, first cause): see harness/run/search.py. The
    first chain found for a key is kept. With a ``path`` (one file per env's pins in the cache, see ``learned_path``)
    they outlive the run: the next run of the same env and ref tries them whole from its first variant on, instead
    of searching again, while each cell's own out-of-the-box attempt still runs first and decides whether it needs
    one. A chain whose workarounds the harness no longer has is ignored; one that fails falls back to the search."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.chains: dict[ChainKey, Learned] = self._read()

    def get(self, key: ChainKey | None) -> Learned | None:
        with self.lock:
            return self.chains.get(key) if key else None

    def remember(self, key: ChainKey | None, learned: Learned | None) -> None:
        if not (key and learned):
            return
        with self.lock:
            if key in self.chains:
                return
            self.chains[key] = learned
            if self.path:  # merged with what another run of this env may have written since; the last write wins
                write_json(self.path, [{"key": list(k), **dataclasses.asdict(v)}
                                       for k, v in {**self._read(), **self.chains}.items()])

    def _read(self) -> dict[ChainKey, Learned]:
        try:
            rows = json.loads(self.path.read_text()) if self.path and self.path.is_file() else []
            chains = {(str(r["key"][0]), str(r["key"][1]), str(r["key"][2])):
                      Learned(tuple(r["names"]), str(r["found_by"]), tuple(r["skipped"]), tuple(r.get("met") or ()))
                      for r in rows}
        except (OSError, ValueError, TypeError, KeyError, IndexError):
            return {}  # unreadable: the search finds the chains again
        return {k: v for k, v in chains.items() if all(n in causes.WORKAROUNDS for n in v.names)}


def learned_path(cache: Path, spec_key: str) -> Path:
    """Where the chains an env's runs found are kept: keyed by the env's pins (the same pins break the same way)."""
    return cache / "learned" / f"{spec_key}.json"


@dataclass(frozen=True)
class Shared:
    """An out-of-the-box attempt that failed before the model's forward ran, and the cell it ran for."""

    attempt: Attempt
    cell: str


class SharedFailures:
    """Out-of-the-box failures that stand for every variant of a ref in a format (causes.py ``before_forward``: the
    ref's script failed while loading or importing, before the patched Detect could matter), keyed by (commit,
    format): later variants record the first one's attempt, marked ``shared_from``, instead of repeating it."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], Shared] = {}
        self.lock = threading.Lock()

    @staticmethod
    def key(result: CellResult) -> tuple[str, str]:
        return result.commit or "", result.format

    def get(self, result: CellResult) -> Shared | None:
        with self.lock:
            return self.found.get(self.key(result))

    def remember(self, result: CellResult, attempt: Attempt, cause: causes.Cause | None) -> None:
        if cause and cause.before_forward and not (attempt.export and attempt.export.files):
            with self.lock:
                self.found.setdefault(self.key(result), Shared(copy.deepcopy(attempt), result.cell))


class Known:
    """What the cells of one env run learn from each other: workaround chains (kept at ``chains`` for later runs too)
    and failures shared by variants."""

    def __init__(self, chains: Path | None = None) -> None:
        self.chains = LearnedChains(chains)
        self.failures = SharedFailures()


@dataclass
class CellSearch:
    """A cell's search in progress: its result, the search, and every chain's attempt so far."""

    result: CellResult
    search: WorkaroundSearch
    tried: dict[tuple[str, ...], Attempt]


def patched_tree(ctx: EnvContext, checkout: Checkout, variant: str, form: str = "guide") -> tuple[Path, str]:
    """The variant's patched tree in ``form`` (shared by every env) and its diff; raises PatchError."""
    patched = ctx.cache / "patched" / checkout.commit / (variant if form == "guide" else f"{variant}+{form}")
    return patched, apply_patch(checkout.path, patched, variant, checkout.ref, form)


def patch_variant(ctx: EnvContext, checkout: Checkout, variant: str, batch: list[CellResult]) -> Path | None:
    """The variant's tree with the guide's line (the out-of-the-box form), or None after marking each cell with why
    not."""
    t = time.monotonic()
    try:
        patched, diff = patched_tree(ctx, checkout, variant)
    except HarnessError as exc:
        # A Detect.forward no row of the patcher's table knows (a release older or newer than the table): a clear
        # "unsupported" cell with the fix, not a crash; the ref's other variants and refs go on.
        unsupported = isinstance(exc, UnknownShapeError)
        message = (f"{exc} — unsupported: add this Detect.forward shape to harness/patch/detect.py (_SHAPES) "
                   f"or drop the ref" if unsupported else str(exc))
        for result in batch:
            first = result.first
            first.stage, first.message, first.cause = "patch", message, "unsupported" if unsupported else "patch"
        return None
    for result in batch:
        result.patch_diff = diff
        result.timings["patch"] = round(time.monotonic() - t, 3)
        cell_dir = ctx.cellroot / result.cell  # the applied diff is kept with the cell's artifacts
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "patch.diff").write_text(diff)
    return patched


def run_variant(ctx: EnvContext, known: Known, checkout: Checkout, variant: str, weights: Path,
                batch: list[CellResult], learn: bool, on_done: Callable[[CellResult], None] = lambda r: None) -> None:
    """Patch, run out of the box, then search workarounds while some cell has a next step; ``on_done`` hears of
    each cell as soon as its search is over."""
    patched = patch_variant(ctx, checkout, variant, batch)
    if patched is None:
        return
    runner = BatchRunner(ctx)
    first = first_attempts(runner, known.failures, patched, weights, batch)
    adaptable = adaptation_of((checkout.path / YOLO_PY).read_text(errors="replace"), variant) is not None
    chains = known.chains
    cells: dict[str, CellSearch] = {}
    for result in batch:
        # A copy: naming the cause edits the cell's attempt, and the pristine one may stand for other variants.
        result.attempts, result.decided = [copy.deepcopy(first[result.cell])], 0
        start = name_cause(result.first, with_hint=True)
        if not result.first.shared_from:
            known.failures.remember(result, first[result.cell], start)
        key = learn_key(result.commit, result.format, start)
        borrowed = chains.get(key) if learn and result.first.status != "pass" else None
        if borrowed and not adaptable and any(causes.WORKAROUNDS[n].patch_form for n in borrowed.names):
            borrowed = None  # found on a variant whose guide line needs adapting; this one's does not
        cells[result.cell] = CellSearch(result, WorkaroundSearch(start, result.first.status == "pass", borrowed), {})
    for _ in range(2 * len(causes.WORKAROUNDS) + 2):  # each step adds a fix: bounded by the table
        wanted: dict[tuple[str, ...], list[CellSearch]] = defaultdict(list)
        for cell in cells.values():
            step = cell.search.propose()
            if isinstance(step, Reuse):  # that chain already ran (borrowed) and failed: it stays the verdict
                cell.result.record(dataclasses.replace(cell.tried[step.names], not_tried=[], not_tried_met=[]))
            elif isinstance(step, Run):
                wanted[step.names].append(cell)
            if cell.search.done:
                on_done(cell.result)
        if not wanted:
            break
        for names, group in wanted.items():
            rerun(ctx, runner, checkout, patched, weights, group, names)
    for cell in cells.values():
        chains.remember(learn_key(cell.result.commit, cell.result.format, cell.search.start),
                        cell.search.learned(cell.result.cell))


def first_attempts(runner: BatchRunner, failures: SharedFailures, patched: Path, weights: Path,
                   batch: list[CellResult]) -> dict[str, Attempt]:
    """The out-of-the-box attempt of each cell: run, or taken from another variant that failed before the model ran."""
    attempts: dict[str, Attempt] = {}
    for result in batch:
        shared = failures.get(result)
        if shared:
            attempts[result.cell] = dataclasses.replace(copy.deepcopy(shared.attempt), shared_from=shared.cell)
    todo = [r for r in batch if r.cell not in attempts]
    if todo:
        attempts.update(runner.attempt(patched, weights, todo, "out-of-the-box", causes.Workaround("none")))
    return attempts


def rerun(ctx: EnvContext, runner: BatchRunner, checkout: Checkout, patched: Path, weights: Path,
          group: list[CellSearch], names: tuple[str, ...]) -> None:
    """Run ``group`` again with the workarounds ``names`` applied together, and tell each search the outcome."""
    fix = causes.combine([causes.WORKAROUNDS[n] for n in names])
    batch = [c.result for c in group]
    diff = None
    try:
        if fix.patch_form:  # the patch table's own form of the variant instead of the guide's line
            patched, diff = patched_tree(ctx, checkout, batch[0].variant, fix.patch_form)
        # A pin workaround runs in a sibling env with those pins, built once into the cache.
        python = ensure_env(derive(ctx.spec, fix.pins), ctx.cache, log=ctx.log) if fix.pins else None
        again = runner.attempt(patched, weights, batch, "workaround", fix, python=python)
    except (EnvError, PatchError) as exc:
        again = {r.cell: failed(stage="patch" if isinstance(exc, PatchError) else "export", message=str(exc))
                 for r in batch}
    for cell in group:
        attempt = again[cell.result.cell]
        step = cell.search.borrowed if cell.search.borrowed and cell.search.borrowed.names == names else None
        rec = dataclasses.replace(attempt, name=fix.name, env=dict(fix.env), shims=list(fix.shims), opset=fix.opset,
                                  pins=dict(fix.pins), patch_form=fix.patch_form, patch_diff=diff, hint=fix.hint,
                                  learned_from=step.found_by if step else None,
                                  not_tried=list(step.skipped) if step else None,
                                  not_tried_met=list(step.met) if step else None)
        cause = name_cause(rec, with_hint=False)
        cell.tried[names] = cell.result.record(rec)
        cell.search.tell(names, cause, rec.status == "pass")

