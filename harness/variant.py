"""One ref x variant batch: patch once, run every format out of the box, then search workarounds for the cells
that broke (harness/search.py decides what to run next; harness/batch.py runs it).

A result's top-level fields hold the out-of-the-box attempt; ``workaround`` the latest rerun, with the reruns before
it in ``workaround.earlier``. Cells that want the same chain next run together in one worker.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness import causes
from harness.batch import BatchRunner, EnvContext, failed, name_cause
from harness.envs import derive, ensure_env
from harness.errors import EnvError, HarnessError, PatchUnsupported
from harness.patch import apply_patch
from harness.results import Attempt, CellResult, WorkaroundRecord
from harness.search import Learned, Reuse, Run, WorkaroundSearch, learn_key
from harness.source import Checkout

PATCH_LOCK = threading.Lock()  # CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth...")


class LearnedChains:
    """Workaround chains found step by step within one env run, keyed by (commit, format, first cause): see
    harness/search.py. The first chain found for a key is kept."""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str, str], Learned] = {}
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str, str] | None) -> Learned | None:
        with self.lock:
            return self.chains.get(key) if key else None

    def remember(self, key: tuple[str, str, str] | None, learned: Learned | None) -> None:
        if key and learned:
            with self.lock:
                self.chains.setdefault(key, learned)


@dataclass
class CellSearch:
    """A cell's search in progress: its result, the search, and every chain's attempt so far."""

    result: CellResult
    search: WorkaroundSearch
    tried: dict[tuple[str, ...], WorkaroundRecord]


def patch_variant(ctx: EnvContext, checkout: Checkout, variant: str, batch: list[CellResult]) -> Path | None:
    """The variant's patched tree (shared by every env), or None after marking each cell with why not."""
    t = time.monotonic()
    patched = ctx.cache / "patched" / checkout.commit / variant
    try:
        with PATCH_LOCK:
            diff = apply_patch(checkout.path, patched, variant, checkout.ref)
    except HarnessError as exc:
        # A Detect.forward no row of the patcher's table knows (a release older or newer than the table): a clear
        # "unsupported" cell with the fix, not a crash; the ref's other variants and refs go on.
        unsupported = isinstance(exc, PatchUnsupported)
        message = (f"{exc} — unsupported: add this Detect.forward shape to harness/patch.py (_SHAPES) or drop the "
                   f"ref" if unsupported else str(exc))
        for result in batch:
            result.stage, result.message, result.cause = "patch", message, "unsupported" if unsupported else "patch"
        return None
    for result in batch:
        result.patch_diff = diff
        result.timings["patch"] = round(time.monotonic() - t, 3)
        cell_dir = ctx.cellroot / result.cell  # the applied diff is kept with the cell's artifacts
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "patch.diff").write_text(diff)
    return patched


def run_variant(ctx: EnvContext, chains: LearnedChains, checkout: Checkout, variant: str, weights: Path,
                batch: list[CellResult], learn: bool) -> None:
    """Patch, run out of the box, then search workarounds while some cell has a next step."""
    patched = patch_variant(ctx, checkout, variant, batch)
    if patched is None:
        return
    runner = BatchRunner(ctx)
    first = runner.attempt(patched, weights, batch, "out-of-the-box", causes.Workaround("none"))
    cells: dict[str, CellSearch] = {}
    for result in batch:
        _take_first(result, first[result.cell])
        start = name_cause(result, with_hint=True)
        key = learn_key(result.commit, result.format, start)
        borrowed = chains.get(key) if learn and result.status != "pass" else None
        cells[result.cell] = CellSearch(result, WorkaroundSearch(start, result.status == "pass", borrowed), {})
    for _ in range(2 * len(causes.WORKAROUNDS) + 2):  # each step adds a fix: bounded by the table
        wanted: dict[tuple[str, ...], list[CellSearch]] = defaultdict(list)
        for cell in cells.values():
            step = cell.search.propose()
            if isinstance(step, Reuse):  # that chain already ran (borrowed) and failed: it stays the verdict
                record(cell.result, WorkaroundRecord(**{**vars(cell.tried[step.names]), "not_tried": []}))
            elif isinstance(step, Run):
                wanted[step.names].append(cell)
        if not wanted:
            break
        for names, group in wanted.items():
            rerun(ctx, runner, patched, weights, group, names)
    for cell in cells.values():
        chains.remember(learn_key(cell.result.commit, cell.result.format, cell.search.start),
                        cell.search.learned(cell.result.cell))


def _take_first(result: CellResult, attempt: Attempt) -> None:
    """Copy the out-of-the-box attempt into the result's own fields, keeping the per-ref timings beside its own."""
    timings = {**result.timings, **attempt.timings}
    for name in Attempt.__dataclass_fields__:
        setattr(result, name, getattr(attempt, name))
    result.timings = timings


def rerun(ctx: EnvContext, runner: BatchRunner, patched: Path, weights: Path, group: list[CellSearch],
          names: tuple[str, ...]) -> None:
    """Run ``group`` again with the workarounds ``names`` applied together, and tell each search the outcome."""
    fix = causes.combine([causes.WORKAROUNDS[n] for n in names])
    batch = [c.result for c in group]
    try:  # a pin workaround runs in a sibling env with those pins, built once into the cache
        python = ensure_env(derive(ctx.spec, fix.pins), ctx.cache, log=ctx.log) if fix.pins else None
        again = runner.attempt(patched, weights, batch, "workaround", fix, python=python)
    except EnvError as exc:
        again = {r.cell: failed(message=str(exc)) for r in batch}
    for cell in group:
        attempt = again[cell.result.cell]
        step = cell.search.borrowed if cell.search.borrowed and cell.search.borrowed.names == names else None
        rec = WorkaroundRecord(**vars(attempt), name=fix.name, env=fix.env, shims=list(fix.shims), opset=fix.opset,
                               pins=fix.pins, hint=fix.hint,
                               learned_from=step.found_by if step else None,
                               not_tried=list(step.skipped) if step else None)
        cause = name_cause(rec, with_hint=False)
        cell.tried[names] = record(cell.result, rec)
        cell.search.tell(names, cause, rec.status == "pass")


def record(result: CellResult, attempt: WorkaroundRecord) -> WorkaroundRecord:
    """Make ``attempt`` the cell's ``workaround`` (its latest rerun); the one it replaces moves to
    ``workaround.earlier``, in the order they ran."""
    earlier = result.workaround
    history = [*earlier.earlier, earlier.as_earlier()] if earlier else []
    attempt.earlier = [h for h in history if h.name != attempt.name]  # an attempt made final again is not earlier
    result.workaround = attempt
    return attempt
