"""Results -> the data the report shows: a grid of refs x envs, per-cell entries, the native signature table and
the charts' inputs (laid out by charts.py).

Kept apart from rendering so the page (html.py) and the XML (junit.py) read one model, and tests can check the
numbers without parsing HTML.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from harness.axes import FORMAT_NAMES, FORMATS, VARIANTS
from harness.patch.profiles import PROFILES
from harness.report import charts
from harness.results.model import Attempt, CellResult, CompileSection
from harness.results.verdict import WORKING, Outcome
from harness.verify.causes import WORKAROUNDS

# Text next to the colour, never colour alone: (symbol, short label, long label).
OUTCOME_LABELS: dict[str, tuple[str, str, str]] = {
    "works": ("✔", "works", "works out of the box"),
    "workaround": ("◑", "w/a", "works with a workaround"),
    "broken": ("✘", "broken", "broken: ran, wrong outputs or parity"),
    "error": ("⚠", "error", "error: a stage could not finish"),
    "skipped": ("○", "skip", "skipped"),
}
COMPILE_LABELS: dict[str, tuple[str, str]] = {
    "pass": ("✔", "compiles"), "fail": ("✘", "fails"), "error": ("⚠", "error"), "skip": ("○", "skipped"),
}
# Column labels of the grid's squares (full names on hover and in the legend); other formats show their first letters.
FORMAT_SHORT: dict[str, str] = {"onnx": "onnx", "onnx-dynamic": "dyn", "torchscript": "ts"}
# The default export a deployment takes, in order of preference, for the native-signature table.
SIGNATURE_FORMATS = ("onnx", "torchscript", "onnx-dynamic")


@dataclass
class Entry:
    """One result as the page shows it."""

    result: CellResult
    outcome: Outcome
    attempts: list[tuple[str, Attempt]]

    @property
    def cell(self) -> str:
        return self.result.cell

    @property
    def compile(self) -> CompileSection | None:
        return self.result.compile

    @property
    def regenerate(self) -> str:
        """The command that makes the cell's exported files again (when [artifacts] keep removed them)."""
        from harness.run.artifacts import regenerate

        return regenerate(self.result)

    @property
    def targets_work(self) -> bool | None:
        """Whether every downstream target that checked this cell works with it; None when none did."""
        if not self.result.targets:
            return None
        return all(target.outcome() in WORKING for target in self.result.targets.values())

    @property
    def search_text(self) -> str:
        """What the page's search box matches, lower case: ref, env, variant, format, the verdict, each attempt's
        workaround and cause."""
        r = self.result
        words = [r.ref, r.env, f"variant {r.variant}", r.format, r.verdict or OUTCOME_LABELS[self.outcome][2]]
        words += [f"{label}: {attempt.cause}" if attempt.cause else label for label, attempt in self.attempts]
        words += [f"{name}: {target.verdict}" for name, target in r.targets.items()]
        return " · ".join(words).lower()

    @property
    def label(self) -> str:
        """The cell and its verdict in one line: a grid square's hover text and accessible name."""
        r = self.result
        text = f"{r.ref} · {r.env} · variant {r.variant} · {r.format}: {r.verdict or OUTCOME_LABELS[self.outcome][2]}"
        if r.compile:
            text += f" · compile {r.compile.status}"
        text += "".join(f" · {name} {target.outcome()}" for name, target in r.targets.items())
        return text


@dataclass
class SignatureRow:
    ref: str
    env: str
    format: str
    outcome: Outcome
    outputs: list[tuple[str | None, list[Any]]]
    changed: bool  # differs from the previous ref's in the same env


@dataclass
class GuideLine:
    """Whether a vendor guide's edit for a patched variant works as written on a ref (harness/patch/profiles.py)."""

    profile: str
    ref: str
    variant: str
    reading: Literal["as written", "adapted", "unknown"]
    workarounds: list[str]  # the patch-form workarounds the ref's cells needed ("patch form tuple(x)")
    cells: int


@dataclass
class TargetCell:
    """One target's checks of one ref in one env (every variant and format it took): how many came to each outcome,
    and why the others did not work."""

    target: str
    ref: str
    env: str
    outcomes: Counter[str]
    causes: list[str]  # distinct causes of the checks that did not work, in the order met

    @property
    def checked(self) -> int:
        return sum(self.outcomes.values())

    @property
    def working(self) -> int:
        return sum(self.outcomes[o] for o in WORKING)


@dataclass
class View:
    refs: list[str]
    envs: list[str]
    variants: list[str]
    formats: list[str]
    grid: dict[tuple[str, str], list[Entry]]
    entries: list[Entry]
    ref_info: dict[str, dict[str, Any]]
    counts: Counter[str]
    signatures: list[SignatureRow] = field(default_factory=list)
    has_compile: bool = False
    has_targets: bool = False
    tolerances: dict[str, float] | None = None
    env_versions: dict[str, dict[str, str]] = field(default_factory=dict)  # env -> package -> version imported
    parity: charts.ParityChart | None = None  # None: no cell reached a parity check
    parity_missing: int = 0  # cells without a parity number (stopped earlier, skipped)
    timing: charts.TimingChart | None = None  # None: no timings recorded
    signature_diffs: dict[str, charts.SignatureDiff] = field(default_factory=dict)  # failing ONNX cell -> diff
    guide_lines: list[GuideLine] = field(default_factory=list)
    targets: dict[str, dict[tuple[str, str], TargetCell]] = field(default_factory=dict)  # name -> (ref, env) -> cell

    def at(self, ref: str, env: str, variant: str, fmt: str) -> Entry | None:
        """The entry of one cell of the grid's variant x format table, or None when it was not run."""
        return next((e for e in self.grid.get((ref, env), [])
                     if e.result.variant == variant and e.result.format == fmt), None)


def short_format(fmt: str) -> str:
    return FORMAT_SHORT.get(fmt, fmt[:4])


def _order(values: set[str], known: tuple[str, ...]) -> list[str]:
    return [v for v in known if v in values] + sorted(values - set(known))


def ref_sort_key(ref: str) -> tuple[int, Any, str]:
    """Version-like refs (v5.0 < v6.2 < v7.0) in version order, then the others by name."""
    try:
        return (0, Version(ref.lstrip("vV")), ref)
    except InvalidVersion:
        return (1, Version("0"), ref)


def env_sort_key(env: str, entries: list[Entry]) -> tuple[Version, str]:
    """Envs in the order of the torch they imported (py38-torch1.8 before py311-torch2.14), then by name."""
    for entry in entries:
        if entry.result.env == env:
            try:
                return Version(str(entry.result.versions.get("torch")).split("+")[0]), env
            except InvalidVersion:
                pass
    return Version("0"), env


def attempts(result: CellResult) -> list[tuple[str, Attempt]]:
    """The attempts of a cell with their labels: out of the box, then each workaround rerun in the order it ran
    (the one that decided marked when it is not the last)."""
    found: list[tuple[str, Attempt]] = [("out of the box", result.first)]
    last = len(result.attempts) - 1
    for i, attempt in enumerate(result.reruns, start=1):
        decided = " (decided)" if i == result.decided and i != last else ""
        found.append((f"with {attempt.name}{decided}", attempt))
    return found


def build(found: list[CellResult], tolerances: dict[str, float] | None = None) -> View:
    """The report's model of ``found`` results (already merged: one per cell)."""
    entries = [Entry(r, r.outcome(), attempts(r)) for r in found]
    refs = sorted({e.result.ref for e in entries}, key=ref_sort_key)
    envs = sorted({e.result.env for e in entries}, key=lambda env: env_sort_key(env, entries))
    variants = _order({e.result.variant for e in entries}, VARIANTS)
    formats = _order({e.result.format for e in entries}, FORMAT_NAMES)
    rank = {(v, f): i for i, (v, f) in enumerate((v, f) for v in variants for f in formats)}
    grid: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: rank[(e.result.variant, e.result.format)]):
        grid[(entry.result.ref, entry.result.env)].append(entry)
    ref_info: dict[str, dict[str, Any]] = {}
    for entry in entries:
        info = ref_info.setdefault(entry.result.ref, {"commits": set(), "standins": set(), "sources": set()})
        if entry.result.commit:
            info["commits"].add(entry.result.commit[:10])
        standin = entry.result.standin
        if standin:
            info["standins"].add(f"{standin.get('distribution')} ({standin.get('closeness', 'not identical')})")
        info["sources"].add(str(entry.result.source))
    view = View(refs=refs, envs=envs, variants=variants, formats=formats, grid=dict(grid),
                entries=[e for ref in refs for env in envs for e in grid.get((ref, env), [])], ref_info=ref_info,
                counts=Counter(e.outcome for e in entries), has_compile=any(e.compile for e in entries),
                has_targets=any(e.result.targets for e in entries),
                tolerances=tolerances)
    for entry in entries:
        if entry.result.versions:
            view.env_versions.setdefault(entry.result.env, entry.result.versions)
    view.signatures = native_signatures(view)
    points = parity_points(view)
    view.parity_missing = len(view.entries) - len(points)
    if points:
        view.parity = charts.parity_chart(points, view.envs, len(view.refs))
    times = stage_seconds(view)
    if any(t for _, t in times):
        view.timing = charts.timing_chart(times)
    view.signature_diffs = signature_diffs(view)
    view.guide_lines = guide_lines(view)
    view.targets = target_cells(view)
    return view


def target_cells(view: View) -> dict[str, dict[tuple[str, str], TargetCell]]:
    """The target summary: per target, per ref x env, the outcomes of its checks and the causes of those that failed."""
    found: dict[str, dict[tuple[str, str], TargetCell]] = {}
    for entry in view.entries:
        ref, env = entry.result.ref, entry.result.env
        for name, section in sorted(entry.result.targets.items()):
            cell = found.setdefault(name, {}).setdefault((ref, env), TargetCell(name, ref, env, Counter(), []))
            verdict = section.judgement
            cell.outcomes[verdict.outcome] += 1
            if verdict.cause and verdict.outcome not in WORKING and verdict.cause not in cell.causes:
                cell.causes.append(verdict.cause)
    return dict(sorted(found.items()))


def guide_lines(view: View) -> list[GuideLine]:
    """Per vendor profile, ref and patched variant: does the guide's edit work as written (some cell works without a
    patch-form workaround), did a cell need the harness's adapted form, or did no cell get far enough to tell?"""
    rows = []
    for profile, ref in ((p, r) for p in PROFILES.values() for r in view.refs):
        for variant in (v for v in profile.variants if v in view.variants):
            entries = [e for env in view.envs for e in view.grid.get((ref, env), []) if e.result.variant == variant]
            if not entries:
                continue
            needed: dict[str, None] = {}
            written = False
            for entry in entries:
                fix = entry.result.judgement.fix
                forms = [n for n in fix.split(" + ") if _is_patch_form(n)] if fix else []
                if entry.outcome == "workaround" and forms:
                    needed.update(dict.fromkeys(forms))
                elif entry.outcome in ("works", "workaround"):
                    written = True
            reading: Literal["as written", "adapted", "unknown"] = (
                "adapted" if needed else "as written" if written else "unknown")
            rows.append(GuideLine(profile.name, ref, variant, reading, list(needed), len(entries)))
    return rows


def _is_patch_form(name: str) -> bool:
    fix = WORKAROUNDS.get(name)
    return bool(fix and fix.patch_form)


def native_signatures(view: View) -> list[SignatureRow]:
    """Per env, ref by ref: the outputs of the native (unpatched) export in the first format that has any."""
    rows: list[SignatureRow] = []
    for env in view.envs:
        previous: SignatureRow | None = None
        for ref in view.refs:
            native = {e.result.format: e for e in view.grid.get((ref, env), []) if e.result.variant == "native"}
            pick = next((native[f] for f in SIGNATURE_FORMATS if f in native and native[f].result.signature()), None)
            if pick is None:
                continue
            outputs = pick.result.signature()
            row = SignatureRow(ref, env, pick.result.format, pick.outcome, outputs, changed=False)
            if previous is not None:
                # Names only count within one format (TorchScript has none); count and shapes always do.
                same_format = previous.format == row.format
                row.changed = ([s for _, s in previous.outputs] != [s for _, s in outputs]
                               or (same_format and previous.outputs != outputs))
            rows.append(row)
            previous = row
    return rows


# -- the charts' inputs -----------------------------------------------------------------------------------------


def worst_tolerance(attempt: Attempt) -> float | None:
    """The largest minimum passing tolerance over an attempt's parity checks (every backend, output and case)."""
    values = [p.min_tolerance for p in attempt.parity if p.min_tolerance is not None]
    return max(values) if values else None


def _limits(tolerances: dict[str, float] | None) -> tuple[float, float] | None:
    if not tolerances or tolerances.get("atol") is None or tolerances.get("rtol") is None:
        return None
    return float(tolerances["atol"]), float(tolerances["rtol"])


def parity_points(view: View) -> list[charts.ParityPoint]:
    """One point per cell whose deciding attempt has parity numbers, judged against its own recorded tolerances
    (those of matrix.toml for results older than that field)."""
    combos = {(v, f): i for i, (v, f) in enumerate((v, f) for v in view.variants for f in view.formats)}
    points: list[charts.ParityPoint] = []
    for entry in view.entries:
        r = entry.result
        worst = worst_tolerance(r.deciding)
        if worst is None:
            continue
        limits = _limits(r.tolerances or view.tolerances)
        against = f"atol {charts.sci(limits[0])}, rtol {charts.sci(limits[1])}" if limits else "not recorded"
        value = f"{charts.sci(worst)}" if worst > 0 else "0 (bit-identical)"
        label = (f"{r.ref} · {r.env} · variant {r.variant} · {r.format}: min passing tolerance {value}; "
                 f"configured {against}")
        points.append(charts.ParityPoint(r.cell, r.env, view.refs.index(r.ref),
                                         combos[(r.variant, r.format)] / max(len(combos), 1), worst, limits, label))
    return points


def stage_seconds(view: View) -> list[tuple[str, dict[str, float]]]:
    """Seconds per env and stage, summed over its cells, with shared work counted once.

    Every cell of a ref x env carries the checkout and checkpoint time it waited for, and every cell of a variant the
    patch time; an export another cell ran for it (``export.shared_with``) is that cell's. Workaround reruns (every
    one that ran) are one extra stage.
    """
    per_env: dict[str, dict[str, float]] = {env: defaultdict(float) for env in view.envs}
    shared: dict[tuple[str, ...], float] = {}
    for entry in view.entries:
        r = entry.result
        totals = per_env[r.env]
        for stage, seconds in r.timings.items():
            if stage in ("checkout", "checkpoint"):
                key: tuple[str, ...] = (r.env, stage, r.ref)
                shared[key] = max(shared.get(key, 0.0), seconds)
            elif stage == "patch":
                key = (r.env, stage, r.ref, r.variant)
                shared[key] = max(shared.get(key, 0.0), seconds)
        first = r.first
        for stage, seconds in first.timings.items():
            if not (stage == "export" and first.export and first.export.shared_with):
                totals[stage] += seconds
        if r.reruns:
            totals[charts.WORKAROUND] += sum(a.seconds(shared_export=False) for a in r.reruns)
    for (env, stage, *_), seconds in shared.items():
        per_env[env][stage] += seconds
    return [(env, dict(per_env[env])) for env in view.envs]


def signature_diffs(view: View) -> dict[str, charts.SignatureDiff]:
    """For each failing (broken or error) ONNX cell: its outputs beside those of the nearest earlier ref's same cell
    (same env, variant and format) that wrote any, so a renamed or reshaped output shows at a glance."""
    onnx = {f for f in view.formats if f in FORMATS and FORMATS[f].backend == "onnxruntime"}
    index = {(e.result.ref, e.result.env, e.result.variant, e.result.format): e for e in view.entries}
    diffs: dict[str, charts.SignatureDiff] = {}
    for entry in view.entries:
        r = entry.result
        if entry.outcome not in ("broken", "error") or r.format not in onnx:
            continue
        earlier = view.refs[:view.refs.index(r.ref)]
        previous = next((p for p in (index.get((ref, r.env, r.variant, r.format)) for ref in reversed(earlier))
                         if p is not None and p.result.signature()), None)
        if previous is not None:
            diffs[r.cell] = charts.signature_diff(previous.result.signature(), r.signature(),
                                                  f"{previous.result.ref} (earlier ref)", f"{r.ref} (this cell)")
    return diffs
