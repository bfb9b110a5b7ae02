"""Cell pairs -> grouped changes: what differs between two results of one slot (env, variant, format), with identical
changes across cells grouped once.

Shared by ``upgrade`` (ref A against ref B, or env X against env Y) and the gate (a saved baseline against today's
results). Both sides are read as ``Facts``: what a deployment depends on in one result (its verdict, the workaround it
needs, the outputs a compiler config names, the ONNX file's opset / IR / external data, parity, the compile verdict).
A baseline file keeps exactly these, so a baseline and a live result compare the same way.

A change is one (kind, before -> after) of one cell pair; a group is every cell with the same change, e.g. "ONNX
output #0 renamed `output` -> `output0`: 27 cells". Each kind says whether it fails the upgrade (a deploy config
written against the old side breaks, or must be checked) and whether the first commit that made it can be found by
bisecting on one cell (``bisect_value``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.axes import FORMAT_NAMES, FORMATS, VARIANTS
from harness.results import CellResult, from_json, to_json

WORKING = ("works", "workaround")

# Output names an exporter makes up rather than takes from the export script: they change with any edit of the graph
# (a new op before the output renumbers them), so a config must not be written on them. Each row: what makes it, seen
# where.
AUTO_NAMES: tuple[tuple[str, str], ...] = (
    (r"^\d+$", "the TorchScript-based exporter numbers unnamed values (v5.0 on torch 1.x-2.x: '403', '1182')"),
    (r"^onnx::", "the TorchScript-based exporter names a value after its op ('onnx::Sigmoid_345')"),
    (r"^/", "node-path names of the graph ('/model.24/Sigmoid_output_0')"),
    # torch >= 2.9's dynamo exporter names unnamed outputs after the aten op that made them (v6.0-v6.1 native: clone).
    (r"^(clone|cat|view|permute|sigmoid|reshape|contiguous|getitem|add|mul|pow|sub|split|slice|select)(_\d+)?$",
     "the dynamo exporter names an unnamed output after its op ('clone_1')"),
)
_AUTO = [re.compile(pattern) for pattern, _ in AUTO_NAMES]
# A dynamic axis the export script did not name gets a made-up name from the exporter, built from the op and the
# output's own name ('Concatoutput_dim_2', 'Transposeoutput0_dim_3', 'Concat1182_dim_0'): it changes with the output's
# name or the graph, not with what is dynamic. Compared as "?" (dynamic, unnamed).
_AUTO_DIM = re.compile(r"_dim_\d+$")


def is_auto_name(name: str | None) -> bool:
    """A name the exporter made up (see AUTO_NAMES): not one to write a config on."""
    return name is not None and any(p.search(name) for p in _AUTO)


# -- one side of a pair ----------------------------------------------------------------------------------------------


@dataclass
class OutputFacts:
    """One exported output: its name (ONNX only), shape at the export size, dtype, and the dims the ONNX file
    declares (symbolic strings on dynamic axes; None for TorchScript)."""

    name: str | None = None
    shape: list[Any] = field(default_factory=list)
    dtype: str | None = None
    dims: list[Any] | None = None


@dataclass
class Facts:
    """What a deployment depends on in one result (the deciding attempt's, when a workaround decided the verdict).

    ``reading`` is the verdict without its out-of-the-box cause: ``works``, ``works with workaround X``,
    ``broken: C`` (errors read ``broken`` too, as in verdicts) or ``skipped``; two cells with the same reading stand
    the same way for a deployer.
    """

    cell: str = ""
    ref: str = ""
    env: str = ""
    variant: str = ""
    format: str = ""
    commit: str | None = None
    source: str | None = None
    standin: str | None = None  # the stand-in distribution, e.g. yolov5==6.1.9; None for upstream code
    outcome: str = "error"
    verdict: str = ""
    reading: str = ""
    fix: str | None = None  # the workaround the verdict needs
    first_cause: str | None = None  # the out-of-the-box attempt's cause
    cause: str | None = None  # the deciding attempt's cause when it did not work
    outputs: list[OutputFacts] = field(default_factory=list)
    opset: int | None = None  # written into the ONNX file
    opset_requested: int | None = None
    ir_version: int | None = None
    external_data: bool | None = None
    data_files: list[str] = field(default_factory=list)
    parity_pass: bool | None = None
    min_tolerance: float | None = None  # the largest minimum passing tolerance over every parity check
    tolerances: dict[str, float] | None = None
    detect_nl: int | None = None  # detection layers (3 on P5, 4 on P6): how many raw outputs variant 3 has
    guide_forms: list[str] = field(default_factory=list)  # patch-form workarounds in the fix (harness/causes.py)
    compile_reading: str | None = None  # tpu-mlir's verdict read like ``reading``; None: not compiled
    compile_fix: str | None = None
    compile_cause: str | None = None
    # Each downstream target's verdict ([targets.NAME], harness/targets/): its outcome and line; absent: not checked.
    targets: dict[str, TargetFacts] = field(default_factory=dict)

    @classmethod
    def of(cls, result: CellResult) -> Facts:
        from harness.causes import WORKAROUNDS

        last = result.final_attempt()
        outcome = result.outcome()
        fix = result.workaround.name if result.workaround and outcome == "workaround" else None
        export = last.export
        onnx = export.onnx if export else None
        declared: list[Any] = [o.get("shape") for o in onnx.outputs] if onnx else []
        outputs = [OutputFacts(o.name, list(o.shape), o.dtype,
                               list(declared[i]) if i < len(declared) and declared[i] is not None else None)
                   for i, o in enumerate(last.outputs)]
        parity = last.parity
        worst = [p.min_tolerance for p in parity if p.min_tolerance is not None]
        onnx_files = [f.get("name", "") for f in (export.files if export else [])]
        facts = cls(
            cell=result.cell, ref=result.ref, env=result.env, variant=result.variant, format=result.format,
            commit=result.commit, source=result.source,
            standin=(result.standin or {}).get("distribution") if result.standin else None,
            outcome=outcome, verdict=result.verdict or result.refresh_verdict(),
            reading=reading(outcome, fix, last.cause), fix=fix, first_cause=result.cause,
            cause=None if outcome in WORKING else (last.cause or "unclassified"), outputs=outputs,
            opset=(onnx.opset if onnx else None) or (export.opset_written if export else None),
            opset_requested=export.opset_requested if export else None,
            ir_version=onnx.ir_version if onnx else None,
            external_data=onnx.external_data if onnx else None,
            data_files=[n for n in onnx_files if onnx and onnx.external_data and not n.endswith(".onnx")],
            parity_pass=all(p.passed for p in parity) if parity else None,
            min_tolerance=max(worst) if worst else None, tolerances=result.tolerances,
            detect_nl=last.detect.nl if last.detect else None,
            guide_forms=[n for n in (fix or "").split(" + ") if n in WORKAROUNDS and WORKAROUNDS[n].patch_form])
        compiled = result.compile
        if compiled is not None:
            fixed = (compiled.workaround or {}).get("name") if compiled.out_of_the_box else None
            status = compiled.status
            facts.compile_reading = ("works" if status == "pass" and not fixed else
                                     f"works with workaround {fixed}" if status == "pass" else
                                     "skipped" if status == "skip" else f"broken: {compiled.cause or 'unclassified'}")
            facts.compile_fix = fixed if status == "pass" else None
            facts.compile_cause = compiled.cause if status not in ("pass", "skip") else None
        facts.targets = {name: TargetFacts(target.outcome(), target.verdict, target.judgement.cause)
                         for name, target in result.targets.items()}
        return facts

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        return from_json(data, cls)

    @property
    def works(self) -> bool:
        return self.outcome in WORKING

    @property
    def onnx(self) -> bool:
        return self.format in FORMATS and FORMATS[self.format].backend == "onnxruntime"


@dataclass
class TargetFacts:
    """A downstream target's verdict on a cell, as the comparison reads it."""

    outcome: str = "error"
    verdict: str = ""
    cause: str | None = None  # the deciding attempt's, when it did not work


def reading(outcome: str, fix: str | None, cause: str | None) -> str:
    """A verdict without its out-of-the-box cause (see Facts.reading)."""
    if outcome == "works":
        return "works"
    if outcome == "workaround":
        return f"works with workaround {fix}"
    if outcome == "skipped":
        return "skipped"
    return f"broken: {cause or 'unclassified'}"


# -- kinds of change -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of change.

    Attributes:
        name: its key in JSON and in tests.
        fails: a group of this kind fails the upgrade (and the gate), unless waived by ``waiver``.
        bisect: its first commit can be found by probing one cell per commit (an export; not a compile).
        waiver: the option that turns a failing group of this kind into a note.
    """

    name: str
    fails: bool
    bisect: bool = True
    waiver: str | None = None


# In the order groups are listed (failing groups first, then this order).
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("broken", fails=True),  # worked, does not now
    Kind("workaround", fails=True, waiver="--accept-workarounds"),  # worked as is (or with X), now needs Y
    Kind("missing", fails=True, bisect=False, waiver="--allow-missing"),  # gate: a baseline cell with no result now
    Kind("count", fails=True),
    Kind("name", fails=True),
    Kind("shape", fails=True),
    Kind("dtype", fails=True),
    Kind("dims", fails=True),  # the dims the ONNX file declares (dynamic axes)
    Kind("opset", fails=True),
    Kind("ir", fails=True),
    Kind("external-data", fails=True),
    Kind("parity", fails=True),
    Kind("compile", fails=True, bisect=False),  # a compile probe is minutes of simulator per commit
    Kind("compile-workaround", fails=True, bisect=False, waiver="--accept-workarounds"),
    Kind("target", fails=True, bisect=False),  # a downstream target took the cell's artifact and does not now
    Kind("auto-name", fails=False),
    Kind("fixed", fails=False),
    Kind("workaround-dropped", fails=False),
    Kind("cause", fails=False),  # broken before and after, for another cause
    Kind("compile-fixed", fails=False, bisect=False),
    Kind("target-fixed", fails=False, bisect=False),
    Kind("new", fails=False, bisect=False),  # gate: a cell not in the baseline
)}

NO_RESULT = "no result"


@dataclass(frozen=True)
class Change:
    """One change of one cell pair. ``position`` is the output index for per-output kinds; ``detail`` this cell's own
    values where the group's before/after summarise many (auto names, parity numbers)."""

    kind: str
    before: str
    after: str
    position: int | None = None
    detail: str = ""

    @property
    def key(self) -> tuple[str, int | None, str, str]:
        if self.kind == "auto-name":
            return (self.kind, None, "", "")
        return (self.kind, self.position, self.before, self.after)


def shape_text(shape: Sequence[Any] | None) -> str:
    return "x".join(str(d) for d in shape or []) or "scalar"


def _dims_text(dims: Sequence[Any] | None) -> str:
    """Declared dims as "[batch, anchors, 85]": names of dynamic axes as the script gave them, "?" for made-up ones."""
    shown = ["?" if isinstance(d, str) and _AUTO_DIM.search(d) else str(d) for d in dims or []]
    return f"[{', '.join(shown)}]"


# Per-output attributes: kind -> how to read it off one output.
_PER_OUTPUT: dict[str, Callable[[OutputFacts], Hashable | None]] = {
    "name": lambda o: o.name,
    "shape": lambda o: shape_text(o.shape),
    "dtype": lambda o: o.dtype,
    "dims": lambda o: _dims_text(o.dims) if o.dims is not None else None,
}


def _external(f: Facts) -> str | None:
    if f.external_data is None:
        return None
    return (", ".join(f.data_files) or "external data") if f.external_data else "none"


# File-level attributes of an ONNX export: kind -> value (None: the cell wrote no file to read it from).
_PER_FILE: dict[str, Callable[[Facts], Hashable | None]] = {
    "opset": lambda f: f.opset if f.onnx and f.outputs else None,
    "ir": lambda f: f.ir_version if f.onnx and f.outputs else None,
    "external-data": lambda f: _external(f) if f.onnx and f.outputs else None,
}


def _parity_state(f: Facts) -> str | None:
    return None if f.parity_pass is None else "within tolerance" if f.parity_pass else "beyond tolerance"


def _tolerance_text(f: Facts) -> str:
    worst = "–" if f.min_tolerance is None else f"{f.min_tolerance:.2g}"
    tol = f.tolerances or {}
    configured = ", ".join(f"{k} {tol[k]:.2g}" for k in ("atol", "rtol") if k in tol) or "not recorded"
    return f"needs tolerance {worst} (configured {configured})"


def changes(before: Facts | None, after: Facts | None) -> list[Change]:
    """Every change from ``before`` to ``after`` (either may be None: a cell on one side only)."""
    if before is None and after is None:
        return []
    if after is None:
        return [Change("missing", before.reading if before else "", NO_RESULT)]
    if before is None:
        return [Change("new", NO_RESULT, after.reading)]
    found = _verdict_changes(before, after) + _output_changes(before.outputs, after.outputs)
    for kind, file_value in _PER_FILE.items():
        x, y = file_value(before), file_value(after)
        if x is not None and y is not None and x != y:
            found.append(Change(kind, str(x), str(y)))
    if before.parity_pass and after.parity_pass is False:
        found.append(Change("parity", "within tolerance", "beyond tolerance",
                            detail=f"{_tolerance_text(before)} → {_tolerance_text(after)}"))
    found += _compile_changes(before, after) + _target_changes(before, after)
    return found


def _target_changes(before: Facts, after: Facts) -> list[Change]:
    """A target that worked with the cell and does not (fails), or the reverse (a note); one change per target."""
    found = []
    for name in sorted(before.targets.keys() & after.targets.keys()):
        old, new = before.targets[name], after.targets[name]
        if "skipped" in (old.outcome, new.outcome) or (old.outcome in WORKING) == (new.outcome in WORKING):
            continue
        kind = "target" if old.outcome in WORKING else "target-fixed"
        found.append(Change(kind, f"{name}: {old.verdict}", f"{name}: {new.verdict}"))
    return found


def _count_text(n: int) -> str:
    return f"{n} output{'s' if n != 1 else ''}"


def _output_changes(old: list[OutputFacts], new: list[OutputFacts]) -> list[Change]:
    """Count, then per output (by position) name, shape, dtype and declared dims; made-up names apart."""
    if not old or not new:
        return []  # one side exported nothing to compare (its verdict says why)
    found = [Change("count", _count_text(len(old)), _count_text(len(new)))] if len(old) != len(new) else []
    autos: list[str] = []
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        for kind, read in _PER_OUTPUT.items():
            x, y = read(a), read(b)
            if x is None or y is None or x == y:
                continue
            if kind == "name" and (is_auto_name(a.name) or is_auto_name(b.name)):
                autos.append(f"#{i} `{x}` → `{y}`")
            else:
                found.append(Change(kind, str(x), str(y), position=i))
    if autos:
        found.append(Change("auto-name", "", "", detail="; ".join(autos)))
    return found


def _verdict_changes(before: Facts, after: Facts) -> list[Change]:
    if before.reading == after.reading:
        return []
    kind = ("broken" if before.works and not after.works else
            "fixed" if after.works and not before.works else
            "workaround" if after.outcome == "workaround" else
            "workaround-dropped" if before.works else
            "cause" if before.outcome != "skipped" and after.outcome != "skipped" else "")
    if not kind:
        return []
    why = f" (out of the box: {after.first_cause})" if kind == "workaround" and after.first_cause else ""
    return [Change(kind, before.reading, after.reading, detail=why.strip())]


def _compile_changes(before: Facts, after: Facts) -> list[Change]:
    old, new = before.compile_reading, after.compile_reading
    if old is None or new is None or old == new or "skipped" in (old, new):
        return []
    old_ok, new_ok = old.startswith("works"), new.startswith("works")
    kind = ("compile" if old_ok and not new_ok else "compile-fixed" if new_ok and not old_ok else
            "compile-workaround" if new_ok and after.compile_fix else "compile-fixed" if new_ok else "")
    return [Change(kind, old, new)] if kind else []


def title(kind: str, position: int | None, before: str, after: str) -> str:
    """One line naming a group's change, in a deployer's words."""
    at = f"#{position}" if position is not None else ""
    first = before.split(" ", 1)[0], after.split(" ", 1)[0]
    texts: dict[str, Callable[[], str]] = {
        "broken": lambda: f"{before} → {after}",
        "workaround": lambda: (f"newly needs a workaround: {after}" if before == "works" else f"{before} → {after}"),
        "missing": lambda: f"{before} → {NO_RESULT} now",
        "new": lambda: f"new cell: {after}",
        "count": lambda: f"output count {first[0]} → {first[1]}",
        "name": lambda: f"ONNX output {at} renamed `{before}` → `{after}`",
        "shape": lambda: f"output {at} shape {before} → {after}",
        "dtype": lambda: f"output {at} dtype {before} → {after}",
        "dims": lambda: f"ONNX output {at} declared dims {before} → {after} (dynamic axes)",
        "opset": lambda: f"ONNX opset written {before} → {after}",
        "ir": lambda: f"ONNX IR version {before} → {after}",
        "external-data": lambda: f"ONNX external-data files: {before} → {after}",
        "parity": lambda: "parity with eager PyTorch: within tolerance → beyond it",
        "compile": lambda: f"tpu-mlir compile: {before} → {after}",
        "compile-workaround": lambda: f"tpu-mlir compile newly needs a workaround: {after}",
        "compile-fixed": lambda: f"tpu-mlir compile: {before} → {after}",
        "target": lambda: f"downstream target {before} → {after}",
        "target-fixed": lambda: f"downstream target {before} → {after}",
        "auto-name": lambda: ("auto-generated ONNX output names changed: such names change with any graph edit; do "
                              "not write configs on them"),
        "fixed": lambda: f"fixed: {before} → {after}",
        "workaround-dropped": lambda: f"no longer needs a workaround: {before} → {after}",
        "cause": lambda: f"still broken, another cause: {before} → {after}",
    }
    return texts[kind]()


# -- grouping --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """Where a pair sits: env (``X → Y`` when the question is an env upgrade), variant, format; ``ref`` when pairs
    of several refs are compared at once (the gate: ``v6.1 → v7.0``, or the ref both sides share)."""

    env: str
    variant: str
    format: str
    ref: str = ""

    def label(self) -> str:
        return " · ".join(p for p in (self.ref, self.env, self.variant, self.format) if p)


@dataclass
class Pair:
    """The two results of one slot: ``before`` on the old side (ref A, env X or the baseline), ``after`` on the new."""

    slot: Slot
    before: Facts | None
    after: Facts | None


@dataclass
class Member:
    pair: Pair
    detail: str = ""


@dataclass
class Group:
    """Every cell with one change.

    Attributes:
        kind, position, before, after: the change (see Change).
        members: the cell pairs that show it.
        failing: it fails the upgrade (the kind fails and its waiver was not given).
        waived: the option that made a failing kind a note, when given.
    """

    kind: str
    position: int | None
    before: str
    after: str
    members: list[Member] = field(default_factory=list)
    failing: bool = False
    waived: str | None = None

    @property
    def title(self) -> str:
        return title(self.kind, self.position, self.before, self.after)

    @property
    def slots(self) -> list[Slot]:
        return [m.pair.slot for m in self.members]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "before": self.before, "after": self.after,
                "title": self.title, "failing": self.failing, "waived": self.waived,
                "cells": [{"slot": m.pair.slot.label(), "ref": m.pair.slot.ref, "env": m.pair.slot.env,
                           "variant": m.pair.slot.variant,
                           "format": m.pair.slot.format, "before": m.pair.before.cell if m.pair.before else None,
                           "after": m.pair.after.cell if m.pair.after else None, "detail": m.detail}
                          for m in self.members]}


def group(pairs: Iterable[Pair], *, accept_workarounds: bool = False, allow_missing: bool = False) -> list[Group]:
    """The changes of every pair, identical ones grouped; failing groups first, then in KINDS order.

    Args:
        accept_workarounds: newly needed workarounds (exports and compiles) are notes, not failures.
        allow_missing: baseline cells with no current result are notes (the gate's --allow-missing).
    """
    waived = {w for w, on in (("--accept-workarounds", accept_workarounds), ("--allow-missing", allow_missing)) if on}
    groups: dict[tuple[str, int | None, str, str], Group] = {}
    for pair in pairs:
        for change in changes(pair.before, pair.after):
            kind = KINDS[change.kind]
            g = groups.get(change.key)
            if g is None:
                off = kind.waiver if kind.waiver in waived else None
                g = groups[change.key] = Group(change.kind, change.position, change.before, change.after,
                                               failing=kind.fails and off is None, waived=off if kind.fails else None)
            g.members.append(Member(pair, change.detail))
    order = list(KINDS)
    return sorted(groups.values(), key=lambda g: (not g.failing, order.index(g.kind), g.position or 0, g.before,
                                                  g.after))


# -- how a group reads to people -------------------------------------------------------------------------------------


def scope(slots: Sequence[Slot], envs: Sequence[str], variants: Sequence[str] = VARIANTS,
          formats: Sequence[str] = FORMAT_NAMES) -> str:
    """"27 cells: every env · variants native/1/3/4 · formats onnx/onnx-dynamic": which cells, without listing each.

    ``envs``, ``variants``, ``formats``: the question's axes, to say "every" when a group covers one whole.
    """
    def axis(values: set[str], universe: Sequence[str], singular: str, plural: str) -> str:
        ordered = [v for v in universe if v in values] + sorted(values - set(universe))
        if len(universe) > 1 and set(universe) <= values:
            return f"every {singular}"
        return f"{singular if len(ordered) == 1 else plural} {'/'.join(ordered)}"

    n = len(slots)
    refs = {s.ref for s in slots if s.ref}
    parts = [axis(refs, [], "ref", "refs")] if refs else []
    parts += [axis({s.env for s in slots}, envs, "env", "envs"),
             axis({s.variant for s in slots}, variants, "variant", "variants"),
             axis({s.format for s in slots}, formats, "format", "formats")]
    return f"{n} cell{'s' if n != 1 else ''}: {' · '.join(parts)}"


# -- bisecting a group -----------------------------------------------------------------------------------------------

# The cell a group is probed on, in order of preference: a native cell (the default export, the one most configs are
# written against); then the variant with the most outputs (groups on outputs #1-#3 then share one cell, so their
# searches share probes); static ONNX (one case to check) before TorchScript before dynamic ONNX (three cases).
_PROBE_VARIANTS = ("native", "4", "3", "1")
_PROBE_FORMATS = ("onnx", "torchscript", "onnx-dynamic")


def representative(g: Group, envs: Sequence[str]) -> Member:
    """The member a bisect probes (see _PROBE_VARIANTS); among equals the question's first env."""
    def rank(m: Member) -> tuple[int, int, int, str]:
        s = m.pair.slot
        return (_index(_PROBE_VARIANTS, s.variant), _index(_PROBE_FORMATS, s.format), _index(envs, s.env), s.label())

    return min(g.members, key=rank)


def _index(values: Sequence[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


def bisect_value(g: Group) -> Callable[[Facts], Hashable | None] | None:
    """What a probe reads off a result to tell old from new for this group; None where probing cannot tell.

    The value equals the group's ``before`` side on a commit that does not show the change yet; None (the commit is
    skipped, like ``git bisect skip``) when the cell cannot show it: it exported nothing to read, or, for a verdict
    change, it broke for a cause other than the group's.
    """
    kind = KINDS[g.kind]
    if not kind.bisect or not kind.fails:
        return None
    if g.kind in _PER_OUTPUT:
        return _output_value(_PER_OUTPUT[g.kind], g.position or 0)
    if g.kind in _PER_FILE:
        file_value = _PER_FILE[g.kind]
        return lambda f: None if file_value(f) is None else str(file_value(f))
    values: dict[str, Callable[[Facts], Hashable | None]] = {
        "broken": lambda f: "working" if f.works else (f.reading if f.reading == g.after else None),
        "workaround": lambda f: f.reading if f.reading in (g.before, g.after) else None,
        "count": lambda f: _count_text(len(f.outputs)) if f.outputs else None,
        "parity": _parity_state,
    }
    return values.get(g.kind)


def _output_value(read: Callable[[OutputFacts], Hashable | None], i: int) -> Callable[[Facts], Hashable | None]:
    def at(f: Facts) -> Hashable | None:
        if not f.outputs:
            return None
        if i >= len(f.outputs):
            return f"no output #{i}"
        value = read(f.outputs[i])
        return None if value is None else str(value)
    return at


def probe_ends(g: Group, member: Member) -> tuple[Hashable, Hashable] | None:
    """The bisect value at both ends of ``member``'s pair (what CellProbe calls before and after)."""
    value = bisect_value(g)
    pair = member.pair
    if value is None or pair.before is None or pair.after is None:
        return None
    return value(pair.before), value(pair.after)


__all__ = ["AUTO_NAMES", "KINDS", "Change", "Facts", "Group", "Kind", "Member", "OutputFacts", "Pair", "Slot",
           "bisect_value", "changes", "group", "is_auto_name", "probe_ends", "reading", "representative", "scope",
           "shape_text", "title"]
