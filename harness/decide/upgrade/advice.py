"""What a deployer edits, per group of changes: text to paste where there is some, the words of harness/verify/causes.py
(and harness/compile/causes.py) where there is not, and "nothing to edit" where that is true. An edit several groups
call for (a cell's count and name changes ask for the same --output_names) is written once, with every cell and group
it serves (``plan``).

The edits are read off the results themselves: the tpu-mlir ``model_transform --output_names`` value is the list of
output names each side's ONNX file has (what harness/compile/run.py passes), per variant and format; the patch variant
that keeps a native export's old outputs is the one whose export at the new side has the old side's shapes, when the
question ran it, and otherwise the one whose promised count matches (said so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import prog
from harness.axes import FORMAT_NAMES, VARIANTS
from harness.compile import causes as compile_causes
from harness.decide.diff import Facts, Group, Member, Slot, axes, is_auto_name, shape_text
from harness.patch.detect import GUIDE_RETURNS
from harness.results.verdict import WORKING
from harness.targets import causes as target_causes
from harness.verify.causes import CAUSES, PINNED_NAME, PINNED_NAMES, WORKAROUNDS

COMPILE_WORKAROUNDS = {c.workaround.name: c.workaround for c in compile_causes.CAUSES if c.workaround}
CAUSE_HINTS = {c.name: c.hint for c in CAUSES}
FIXED_BY = {c.workaround.name: c.name for c in CAUSES if c.workaround}  # workaround -> the cause it is for
COMPILE_HINTS = {c.name: c.hint for c in compile_causes.CAUSES}
COMPILE_CAUSE_FIXES = {c.name: c.workaround for c in compile_causes.CAUSES if c.workaround}


@dataclass
class Edit:
    """One edit: ``what`` to change, the text ``before`` and ``after`` where there is text to paste, and a ``note``
    in words. ``slots`` are the cells it applies to (``where`` says it short)."""

    what: str
    before: str | None = None
    after: str | None = None
    note: str = ""
    slots: list[Slot] = field(default_factory=list)
    where: str = ""
    groups: list[int] = field(default_factory=list)  # the groups (by index) that call for it, in plan()

    @property
    def key(self) -> tuple[str, str | None, str | None, str]:
        return (self.what, self.before, self.after, self.note)

    def text(self) -> str:
        """One line: what (where): `before` → `after` — note."""
        head = self.what + (f" ({self.where})" if self.where else "")
        if self.before is not None and self.after is not None:
            head += f": `{self.before}` → `{self.after}`"
        elif self.after is not None:
            head += f": `{self.after}`"
        return head + (f" — {self.note}" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "before": self.before, "after": self.after, "note": self.note,
                "where": self.where, "text": self.text(), "groups": self.groups,
                "cells": [s.label() for s in self.slots]}


NOTHING = "nothing to edit"


@dataclass(frozen=True)
class Sides:
    """The question's two sides as a reader names them, and what the new side exported (for the variant advice)."""

    before: str  # "v6.1", or "py311-torch2.4"
    after: str
    after_facts: Mapping[tuple[str, str, str], Facts]  # (slot env, variant, format) -> the new side's result
    envs: Sequence[str] = ()
    variants: Sequence[str] = VARIANTS
    formats: Sequence[str] = FORMAT_NAMES
    refs: Sequence[str] = ()  # the gate's (pairs of several refs at once)


def edits(g: Group, sides: Sides) -> list[Edit]:
    """The edits for one group, identical ones merged, each with the cells it applies to; [] when there is nothing
    to edit."""
    merged: dict[tuple[str, str | None, str | None, str], Edit] = {}
    for member in g.members:
        for edit in _member_edits(g, member, sides):
            kept = merged.setdefault(edit.key, Edit(edit.what, edit.before, edit.after, edit.note))
            kept.slots += [s for s in edit.slots if s not in kept.slots]
    return [e for e in merged.values() if e.what != NOTHING]


def plan(groups: Sequence[Group], sides: Sides) -> tuple[list[Edit], list[list[int]]]:
    """Every group's edits, each edit once (with the cells and the groups it serves) in the order the groups first
    call for it; and per group, the indices of its edits."""
    merged: dict[tuple[str, str | None, str | None, str], Edit] = {}
    for i, g in enumerate(groups):
        for edit in edits(g, sides):
            kept = merged.setdefault(edit.key, Edit(edit.what, edit.before, edit.after, edit.note))
            kept.slots += [s for s in edit.slots if s not in kept.slots]
            kept.groups += [i] if i not in kept.groups else []
    found = list(merged.values())
    for edit in found:
        edit.where = where(edit.slots, sides)
    return found, [[j for j, e in enumerate(found) if i in e.groups] for i in range(len(groups))]


def where(slots: Sequence[Slot], sides: Sides) -> str:
    """The cells an edit applies to, short: the axes it does not cover whole ("variants native/1 · format onnx");
    "" when it applies to every cell of the question."""
    return " · ".join(p.text for p in axes(slots, sides.envs, sides.variants, sides.formats, sides.refs)
                      if not p.whole)


def _member_edits(g: Group, m: Member, sides: Sides) -> list[Edit]:
    """One member's edits, by the group's kind (EDITS); none for the kinds with nothing to edit."""
    edit = EDITS.get(g.kind)
    return (edit(g, m, sides) if edit else None) or []


def _signature(g: Group, m: Member, sides: Sides) -> list[Edit] | None:
    before, after, slot = m.pair.before, m.pair.after, m.pair.slot
    if not (before and after):
        return None
    found = _signature_edits(before, after, slot)
    if g.kind == "count" and slot.variant == "native":
        found += _keep_old_outputs(before, slot, sides)
    return found


def _per_output(g: Group, m: Member, sides: Sides) -> list[Edit]:
    what = {"shape": "shape", "dtype": "dtype", "dims": "declared dims"}[g.kind]
    return [Edit(f"what reads output #{g.position} (post-processing, a compiler's shape settings)",
                 note=f"its {what} is {g.after} now (was {g.before})", slots=[m.pair.slot])]


def _workaround(g: Group, m: Member, sides: Sides) -> list[Edit]:
    """The one workaround this group is about: what to add, and the cause it answers (its own, not the cell's
    out-of-the-box cause, which may belong to another group)."""
    return [_add_workaround(g.after, FIXED_BY.get(g.after, ""), m.pair.slot)]


def _dropped(g: Group, m: Member, sides: Sides) -> list[Edit]:
    return [Edit(f"no longer needed: {g.before}", note="safe to remove", slots=[m.pair.slot])]


def _pinned(g: Group, m: Member, sides: Sides) -> list[Edit]:
    names = ", ".join(f"'{PINNED_NAME.format(i)}'" for i in range(2))
    return [Edit("name every ONNX output in the export call (torch.onnx.export)", after=f"output_names=[{names}, ...]",
                 note=f"one name per output, so the exporter makes none up; checked as the export option "
                      f"`{PINNED_NAMES.name}` on both sides, whose names are the ones compared here",
                 slots=[m.pair.slot])]


def _broken(g: Group, m: Member, sides: Sides) -> list[Edit] | None:
    after = m.pair.after
    if after is None:
        return None
    hint = CAUSE_HINTS.get(after.cause or "", "")
    return [Edit(f"nothing to paste: no known workaround for {after.cause}", note=hint, slots=[m.pair.slot])]


def _opset(g: Group, m: Member, sides: Sides) -> list[Edit]:
    return [Edit(f"expect ONNX opset {g.after} (was {g.before})",
                 note=f"a compiler or runtime configured for opset {g.before} must accept {g.after}, or ask the export "
                      f"script for it (export.py --opset {g.before}, where the script has the flag)",
                 slots=[m.pair.slot])]


def _ir(g: Group, m: Member, sides: Sides) -> list[Edit]:
    newer = g.after.isdigit() and int(g.after) > compile_causes.MAX_IR_VERSION
    note = (f"tpu-mlir 1.30.2 loads IR <= {compile_causes.MAX_IR_VERSION}: {compile_causes.IR9.name} — "
            f"{compile_causes.IR9.hint}" if newer else "")
    return [Edit(f"expect ONNX IR version {g.after} (was {g.before})", note=note, slots=[m.pair.slot])]


def _external_data(g: Group, m: Member, sides: Sides) -> list[Edit]:
    note = ("ship these files beside the .onnx and load it from its own folder: the weights are no longer inside the "
            ".onnx" if g.after != "none" else "the weights are inside the .onnx again: no separate file to ship")
    return [Edit(f"ONNX external data: {g.before} → {g.after}", note=note, slots=[m.pair.slot])]


def _parity(g: Group, m: Member, sides: Sides) -> list[Edit]:
    return [Edit("check accuracy on your data", note=f"{m.detail}: raise [tolerances] only if that difference is "
                                                     f"acceptable for your deployment", slots=[m.pair.slot])]


def _compile(g: Group, m: Member, sides: Sides) -> list[Edit] | None:
    after = m.pair.after
    if after is None:
        return None
    cause = after.compile_cause or ""
    fix = COMPILE_CAUSE_FIXES.get(cause)
    if fix is not None:  # a known cause with a safe workaround the compile check did not try here
        return [Edit(f"add to the tpu-mlir step: {fix.name}", note=f"{COMPILE_HINTS.get(cause, '')}: {fix.hint}",
                     slots=[m.pair.slot])]
    return [Edit(f"nothing to paste: tpu-mlir compile now {after.compile_reading}", note=COMPILE_HINTS.get(cause, ""),
                 slots=[m.pair.slot])]


def _compile_workaround(g: Group, m: Member, sides: Sides) -> list[Edit] | None:
    after = m.pair.after
    if after is None or not after.compile_fix:
        return None
    fix = COMPILE_WORKAROUNDS.get(after.compile_fix)
    return [Edit(f"add to the tpu-mlir step: {after.compile_fix}", note=fix.hint if fix else "", slots=[m.pair.slot])]


def _missing(g: Group, m: Member, sides: Sides) -> list[Edit]:
    return [Edit("run these cells", after=prog.command(f"run --env {m.pair.slot.env}"),
                 note="or pass --allow-missing if they were dropped on purpose", slots=[m.pair.slot])]


def _target(g: Group, m: Member, sides: Sides) -> list[Edit] | None:
    """Per target that took the cell's artifact before and does not now: what it refuses, and why (the hint of
    harness/targets/causes.py)."""
    before, after = m.pair.before, m.pair.after
    if before is None or after is None:
        return None
    hints = {c.name: c.hint for c in target_causes.CAUSES}
    return [Edit(f"{name} no longer takes this export: {new.verdict}", note=hints.get(new.cause or "", ""),
                 slots=[m.pair.slot])
            for name, new in sorted(after.targets.items())
            if name in before.targets and before.targets[name].outcome in WORKING and new.outcome not in WORKING]


# kind -> the edits of one member (None: nothing to edit); the kinds not here are notes with nothing to edit.
EDITS: dict[str, Callable[[Group, Member, Sides], list[Edit] | None]] = {
    "count": _signature, "name": _signature, "auto-name": _signature,
    "shape": _per_output, "dtype": _per_output, "dims": _per_output,
    "workaround": _workaround, "workaround-dropped": _dropped, "pinned-names": _pinned,
    "broken": _broken, "opset": _opset, "ir": _ir, "external-data": _external_data,
    "parity": _parity, "compile": _compile, "compile-workaround": _compile_workaround, "missing": _missing,
    "target": _target,
}


def output_names(facts: Facts) -> str:
    return ",".join(o.name or "" for o in facts.outputs)


def _signature_edits(before: Facts, after: Facts, slot: Slot) -> list[Edit]:
    """tpu-mlir's --output_names for an ONNX cell, before and after; TorchScript has no names: what unpacks its
    outputs must follow the count and shapes."""
    if before.onnx and after.onnx and all(o.name for o in before.outputs + after.outputs):
        old, new = output_names(before), output_names(after)
        if old == new:
            return [Edit(f"{NOTHING} in tpu-mlir's --output_names", note=f"the names stay `{new}`", slots=[slot])]
        autos = sorted({o.name for o in after.outputs if is_auto_name(o.name)} |
                       {o.name for o in before.outputs if is_auto_name(o.name)}, key=str)
        note = (f"auto-generated: {', '.join(f'`{a}`' for a in autos)} — such names change with any graph edit; do "
                f"not write configs on them" if autos else "")
        return [Edit("tpu-mlir model_transform", before=f"--output_names {old}", after=f"--output_names {new}",
                     note=note, slots=[slot])]
    shapes = ", ".join(shape_text(o.shape) for o in after.outputs)
    return [Edit(f"code that reads the {slot.format} outputs",
                 note=f"{len(after.outputs)} output(s) now: {shapes} (was {len(before.outputs)}: "
                      f"{', '.join(shape_text(o.shape) for o in before.outputs)})", slots=[slot])]


def _keep_old_outputs(before: Facts, slot: Slot, sides: Sides) -> list[Edit]:
    """The patch variant whose export on the new side has the old native outputs' shapes."""
    old = [shape_text(o.shape) for o in before.outputs]
    for variant in GUIDE_RETURNS:
        facts = sides.after_facts.get((slot.env, variant, slot.format))
        if facts and facts.works and [shape_text(o.shape) for o in facts.outputs] == old:
            form = (f"; on {sides.after} the guide's line needs {' + '.join(facts.guide_forms)}: "
                    + "; ".join(WORKAROUNDS[n].hint for n in facts.guide_forms)) if facts.guide_forms else ""
            return [Edit(f"to keep the old {len(old)} outputs, patch Detect.forward's return in models/yolo.py "
                         f"(variant {variant})", after=f"return {GUIDE_RETURNS[variant]}",
                         note=f"variant {variant} exports {', '.join(old)} on {sides.after} ({facts.reading}){form}",
                         slots=[slot])]
    nl = before.detect_nl or 3
    guess = {1: "1", nl: "3", nl + 1: "4"}.get(len(old))
    if guess is None:
        return [Edit(f"no patch variant gives the old {len(old)} outputs", slots=[slot])]
    ran = sides.after_facts.get((slot.env, guess, slot.format))
    checked = (f"variant {guess} was run on {sides.after}: {ran.reading}, outputs "
               f"{', '.join(shape_text(o.shape) for o in ran.outputs) or 'none'}" if ran else
               f"inferred from the count: add --variants {guess} to see it export on {sides.after}")
    return [Edit(f"to keep the old {len(old)} outputs, patch Detect.forward's return in models/yolo.py "
                 f"(variant {guess})", after=f"return {GUIDE_RETURNS[guess]}", note=checked, slots=[slot])]


def _add_workaround(name: str, cause: str, slot: Slot) -> Edit:
    """The edit that applies one workaround, as text to paste where it has some; ``cause``: the one it answers."""
    fix = WORKAROUNDS.get(name)
    note = "; ".join(t for t in (fix.hint if fix else "", f"for: {cause}" if cause else "") if t)
    if fix is None:
        return Edit(f"add workaround {name}", note=note, slots=[slot])
    if fix.env:
        paste = " ".join(f"{k}={v}" for k, v in fix.env.items())
        return Edit("add to the export's environment", after=f"export {paste}", note=note, slots=[slot])
    if fix.pins:
        paste = " ".join(f"{k}=={v}" for k, v in fix.pins.items())
        return Edit("pin in the export's env", after=f"pip install {paste}", note=note, slots=[slot])
    if fix.opset is not None:
        return Edit("add to the export command", after=f"--opset {fix.opset}", note=note, slots=[slot])
    if fix.patch_form:
        return Edit(f"use the adapted Detect patch ({name})", note=note, slots=[slot])
    return Edit(f"edit the export script ({name})", note=note, slots=[slot])


__all__ = ["NOTHING", "Edit", "Sides", "edits", "output_names", "plan", "where"]
