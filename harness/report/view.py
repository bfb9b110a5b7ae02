"""Results -> the data the report shows: a grid of refs x envs, per-cell entries, the native signature table.

Kept apart from rendering so the page (html.py) and the XML (junit.py) read one model, and tests can check the
numbers without parsing HTML.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from harness.axes import FORMAT_NAMES, VARIANTS
from harness.results import Attempt, CellResult, CompileSection, Outcome

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


@dataclass
class SignatureRow:
    ref: str
    env: str
    format: str
    outcome: Outcome
    outputs: list[tuple[str | None, list[Any]]]
    changed: bool  # differs from the previous ref's in the same env


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
    tolerances: dict[str, float] | None = None
    env_versions: dict[str, dict[str, str]] = field(default_factory=dict)  # env -> package -> version imported

    def at(self, ref: str, env: str, variant: str, fmt: str) -> Entry | None:
        """The entry of one cell of the grid's variant x format table, or None when it was not run."""
        return next((e for e in self.grid.get((ref, env), [])
                     if e.result.variant == variant and e.result.format == fmt), None)


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
    """The attempts of a cell with their labels: out of the box, then the workaround rerun if one ran."""
    found: list[tuple[str, Attempt]] = [("out of the box", result)]
    if result.workaround:
        found.append((f"with {result.workaround.name}", result.workaround))
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
                tolerances=tolerances)
    for entry in entries:
        if entry.result.versions:
            view.env_versions.setdefault(entry.result.env, entry.result.versions)
    view.signatures = native_signatures(view)
    return view


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
