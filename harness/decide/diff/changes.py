"""Kinds of change, and the changes of one cell pair.

A change is one thing a deploy config written against the old side must follow: one newly needed workaround (each
component of a chain on its own), one output's name or shape, the output count, the ONNX file's opset, a parity or
compile regression. A cell pair can show several; each is grouped with the same change of other cells
(harness/decide/diff/groups.py).

Adding a kind (a downstream target's regression, say): a ``Kind`` row in KINDS (its title, whether it fails, whether
a probe can find its first commit) and a finder in FINDERS that returns it; harness/decide/upgrade/advice.py EDITS says
what
to edit for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from harness.decide.diff.facts import Facts, OutputFacts, is_auto_name, shape_text
from harness.results.verdict import WORKING

NO_RESULT = "no result"


@dataclass(frozen=True)
class Change:
    """One change of one cell pair: ``kind``, what it was and is (``before``, ``after``: a workaround's name, an
    output's name, a count...), ``position`` the output index for per-output kinds; ``detail`` this cell's own
    values where the group's summarise many (the cell's verdicts, made-up names, parity numbers)."""

    kind: str
    before: str = ""
    after: str = ""
    position: int | None = None
    detail: str = ""

    @property
    def key(self) -> tuple[str, int | None, str, str]:
        """Changes with one key are one group."""
        return (self.kind, self.position, self.before, self.after)


@dataclass(frozen=True)
class Kind:
    """One kind of change.

    Attributes:
        name: its key in JSON and in tests.
        fails: a group of this kind fails the upgrade (and the gate), unless waived by ``waiver``.
        title: the group's line, in a deployer's words, from its change.
        bisect: its first commit (or env) can be found by probing one cell per step (an export; not a compile).
        waiver: the option that turns a failing group of this kind into a note.
    """

    name: str
    fails: bool
    title: Callable[[Change], str]
    bisect: bool = True
    waiver: str | None = None


def _at(c: Change) -> str:
    return f"#{c.position}" if c.position is not None else ""


# In the order groups are listed (failing groups first, then this order).
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("broken", True, lambda c: f"worked, now {c.after}"),
    Kind("workaround", True, lambda c: f"newly needs workaround {c.after}", waiver="--accept-workarounds"),
    # gate: a baseline cell with no result now
    Kind("missing", True, lambda c: f"{NO_RESULT} now", bisect=False, waiver="--allow-missing"),
    Kind("count", True, lambda c: f"output count {c.before} → {c.after}"),
    Kind("name", True, lambda c: f"ONNX output {_at(c)} renamed `{c.before}` → `{c.after}`"),
    Kind("shape", True, lambda c: f"output {_at(c)} shape {c.before} → {c.after}"),
    Kind("dtype", True, lambda c: f"output {_at(c)} dtype {c.before} → {c.after}"),
    Kind("dims", True, lambda c: f"ONNX output {_at(c)} declared dims {c.before} → {c.after} (dynamic axes)"),
    Kind("opset", True, lambda c: f"ONNX opset written {c.before} → {c.after}"),
    Kind("ir", True, lambda c: f"ONNX IR version {c.before} → {c.after}"),
    Kind("external-data", True, lambda c: f"ONNX external-data files: {c.before} → {c.after}"),
    Kind("parity", True, lambda c: "parity with eager PyTorch: within tolerance → beyond it"),
    # A compile probe is minutes of simulator per commit: not bisected.
    Kind("compile", True, lambda c: f"tpu-mlir compile worked, now {c.after}", bisect=False),
    Kind("compile-workaround", True, lambda c: f"tpu-mlir compile newly needs workaround {c.after}", bisect=False,
         waiver="--accept-workarounds"),
    # A downstream target (harness/targets/) took the cell's export and does not now: not bisected either.
    Kind("target", True, lambda c: f"downstream target {c.before}: works, now {c.after}", bisect=False),
    Kind("pinned-names", False, lambda c: ("made-up ONNX output names: compared with every output's name pinned "
                                           "(export option `pinned output names`)"), bisect=False),
    Kind("auto-name", False, lambda c: ("made-up ONNX output names changed: such names change with any graph edit; "
                                        "do not write configs on them")),
    Kind("fixed", False, lambda c: f"works now (was {c.before})"),
    Kind("workaround-dropped", False, lambda c: f"no longer needs workaround {c.before}"),
    Kind("cause", False, lambda c: f"still not working, another cause: {c.before} → {c.after}"),
    Kind("compile-fixed", False, lambda c: f"tpu-mlir compile works now (was {c.before})", bisect=False),
    Kind("target-fixed", False, lambda c: f"downstream target {c.before} works now (was {c.after})", bisect=False),
    Kind("new", False, lambda c: "new cell (not in the baseline)", bisect=False),  # gate: a cell not in the baseline
)}


def title(change: Change) -> str:
    """The line naming a change (and its group)."""
    return KINDS[change.kind].title(change)


# -- what one pair shows ---------------------------------------------------------------------------------------------


def _verdict_changes(before: Facts, after: Facts) -> list[Change]:
    """One change per newly needed workaround (and per one no longer needed) when both sides work; otherwise the
    verdict's own change: stopped working, works now, or another cause. The cell's verdicts are the detail."""
    detail = f"{before.reading} → {after.reading}"
    if before.works and after.works:
        had, need = set(before.fixes), set(after.fixes)
        return ([Change("workaround", after=n, detail=detail) for n in after.fixes if n not in had] +
                [Change("workaround-dropped", before=n, detail=detail) for n in before.fixes if n not in need])
    if before.works:
        return [Change("broken", after=after.reading, detail=detail)]
    if before.outcome == "skipped" or after.outcome == "skipped" or before.reading == after.reading:
        return []
    if after.works:
        return [Change("fixed", before=before.reading, detail=detail)]
    return [Change("cause", before.reading, after.reading, detail=detail)]


# A dynamic axis the export script did not name gets a made-up name from the exporter, built from the op and the
# output's own name ('Concatoutput_dim_2', 'Transposeoutput0_dim_3', 'Concat1182_dim_0'): it changes with the output's
# name or the graph, not with what is dynamic. Compared as "?" (dynamic, unnamed).
_AUTO_DIM = re.compile(r"_dim_\d+$")


def _dims_text(dims: Sequence[object] | None) -> str:
    """Declared dims as "[batch, anchors, 85]": names of dynamic axes as the script gave them, "?" for made-up ones."""
    shown = ["?" if isinstance(d, str) and _AUTO_DIM.search(d) else str(d) for d in dims or []]
    return f"[{', '.join(shown)}]"


# Per-output attributes: kind -> how to read it off one output.
PER_OUTPUT: dict[str, Callable[[OutputFacts], Hashable | None]] = {
    "name": lambda o: o.name,
    "shape": lambda o: shape_text(o.shape),
    "dtype": lambda o: o.dtype,
    "dims": lambda o: _dims_text(o.dims) if o.dims is not None else None,
}


def _output_changes(before: Facts, after: Facts) -> list[Change]:
    """Count, then per output (by position) name, shape, dtype and declared dims; made-up names apart."""
    old, new = before.outputs, after.outputs
    if not old or not new:
        return []  # one side exported nothing to compare (its verdict says why)
    found = [Change("count", str(len(old)), str(len(new)))] if len(old) != len(new) else []
    autos: list[str] = []
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        for kind, read in PER_OUTPUT.items():
            x, y = read(a), read(b)
            if x is None or y is None or x == y:
                continue
            if kind == "name" and (is_auto_name(a.name) or is_auto_name(b.name)):
                autos.append(f"#{i} `{x}` → `{y}`")
            else:
                found.append(Change(kind, str(x), str(y), position=i))
    if autos:
        found.append(Change("auto-name", detail="; ".join(autos)))
    return found


def _external(f: Facts) -> str | None:
    if f.external_data is None:
        return None
    return (", ".join(f.data_files) or "external data") if f.external_data else "none"


# File-level attributes of an ONNX export: kind -> value (None: the cell wrote no file to read it from).
PER_FILE: dict[str, Callable[[Facts], Hashable | None]] = {
    "opset": lambda f: f.opset if f.onnx and f.outputs else None,
    "ir": lambda f: f.ir_version if f.onnx and f.outputs else None,
    "external-data": lambda f: _external(f) if f.onnx and f.outputs else None,
}


def _file_changes(before: Facts, after: Facts) -> list[Change]:
    found = []
    for kind, file_value in PER_FILE.items():
        x, y = file_value(before), file_value(after)
        if x is not None and y is not None and x != y:
            found.append(Change(kind, str(x), str(y)))
    return found


def parity_state(f: Facts) -> str | None:
    return None if f.parity_pass is None else "within tolerance" if f.parity_pass else "beyond tolerance"


def _tolerance_text(f: Facts) -> str:
    worst = "–" if f.min_tolerance is None else f"{f.min_tolerance:.2g}"
    tol = f.tolerances or {}
    configured = ", ".join(f"{k} {tol[k]:.2g}" for k in ("atol", "rtol") if k in tol) or "not recorded"
    return f"needs tolerance {worst} (configured {configured})"


def _parity_changes(before: Facts, after: Facts) -> list[Change]:
    if before.parity_pass and after.parity_pass is False:
        return [Change("parity", "within tolerance", "beyond tolerance",
                       detail=f"{_tolerance_text(before)} → {_tolerance_text(after)}")]
    return []


def _compile_changes(before: Facts, after: Facts) -> list[Change]:
    old, new = before.compile_outcome, after.compile_outcome
    if old is None or new is None or "skipped" in (old, new) or before.compile_reading == after.compile_reading:
        return []
    working = ("works", "workaround")
    detail = f"{before.compile_reading} → {after.compile_reading}"
    if old in working and new not in working:
        return [Change("compile", after=after.compile_reading or "", detail=detail)]
    if new in working and old not in working:
        return [Change("compile-fixed", before=before.compile_reading or "", detail=detail)]
    if new == "workaround" and after.compile_fix and after.compile_fix != before.compile_fix:
        return [Change("compile-workaround", after=after.compile_fix, detail=detail)]
    return []


def _target_changes(before: Facts, after: Facts) -> list[Change]:
    """Per target that checked both sides: one that worked and does not (fails), or the reverse (a note)."""
    found = []
    for name in sorted(before.targets.keys() & after.targets.keys()):
        old, new = before.targets[name], after.targets[name]
        if "skipped" in (old.outcome, new.outcome) or (old.outcome in WORKING) == (new.outcome in WORKING):
            continue
        kind, shown = ("target", new) if old.outcome in WORKING else ("target-fixed", old)
        found.append(Change(kind, before=name, after=shown.verdict, detail=f"{old.verdict} → {new.verdict}"))
    return found


# Each finder reads one aspect of a pair whose both sides have a result; changes() runs them in this order.
FINDERS: tuple[Callable[[Facts, Facts], list[Change]], ...] = (
    _verdict_changes, _output_changes, _file_changes, _parity_changes, _compile_changes, _target_changes,
)


def changes(before: Facts | None, after: Facts | None) -> list[Change]:
    """Every change from ``before`` to ``after`` (either may be None: a cell on one side only)."""
    if before is None and after is None:
        return []
    if after is None:
        return [Change("missing", after=NO_RESULT, detail=before.reading if before else "")]
    if before is None:
        return [Change("new", before=NO_RESULT, detail=after.reading)]
    return [change for find in FINDERS for change in find(before, after)]


__all__ = ["FINDERS", "KINDS", "NO_RESULT", "PER_FILE", "PER_OUTPUT", "Change", "Kind", "changes", "parity_state",
           "title"]
