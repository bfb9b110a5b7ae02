"""Cell pairs -> groups: every cell with the same change in one group, a cell with two changes in two groups.

A pair is the two results of one slot (env, variant, format; and ref for the gate). When both the ref and the env
change (``upgrade --from A --from-env X --to B --to-env Y``), the pair also holds the corner (B in X): a change it
already shows came with YOLOv5 (``axis`` "ref"), the others with the env ("env"). Groups of each axis are apart, so
each has one place to find its cause: a commit between the refs, or an env in the config's order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.axes import FORMAT_NAMES, VARIANTS
from harness.decide.diff.changes import KINDS, PER_FILE, PER_OUTPUT, Change, changes, parity_state, title
from harness.decide.diff.facts import Facts, OutputFacts


@dataclass(frozen=True)
class Slot:
    """Where a pair sits: env (``X → Y`` when the env changes), variant, format; ``ref`` when pairs of several refs
    are compared at once (the gate: ``v6.1 → v7.0``, or the ref both sides share)."""

    env: str
    variant: str
    format: str
    ref: str = ""

    def label(self) -> str:
        return " · ".join(p for p in (self.ref, self.env, self.variant, self.format) if p)


@dataclass
class Pair:
    """The two results of one slot: ``before`` on the old side (ref A in env X, or the baseline), ``after`` on the
    new (ref B in env Y).

    Attributes:
        axis: what changes between them when only one thing does: "ref", "env", or "" (the gate: either).
        corner: B in X, when both the ref and the env change: it tells their changes apart.
        pinned: both sides are results with their output names pinned (the export option), because the out-of-the-box
            ones have made-up names: what they were.
    """

    slot: Slot
    before: Facts | None
    after: Facts | None
    axis: str = ""
    corner: Facts | None = None
    pinned: str = ""

    def attributed(self) -> list[tuple[Change, str]]:
        """This pair's changes, each with the axis it came with."""
        found = changes(self.before, self.after)
        if self.pinned:
            found.append(Change("pinned-names", detail=self.pinned))
        if self.corner is None:
            return [(c, self.axis) for c in found]
        by_ref = {c.key for c in changes(self.before, self.corner)}
        return [(c, "" if c.kind == "pinned-names" else "ref" if c.key in by_ref else "env") for c in found]

    def ends(self, axis: str) -> tuple[Facts | None, Facts | None]:
        """The two results a change of ``axis`` lies between: A and the corner for the ref, the corner and B for the
        env (the pair itself when only one thing changes)."""
        if self.corner is None:
            return self.before, self.after
        return (self.before, self.corner) if axis == "ref" else (self.corner, self.after)


@dataclass
class Member:
    pair: Pair
    detail: str = ""


@dataclass
class Group:
    """Every cell with one change.

    Attributes:
        kind, position, before, after: the change (see Change).
        axis: what it came with: "ref" (YOLOv5), "env", or "" (not told apart: the gate).
        members: the cell pairs that show it.
        failing: it fails the upgrade (the kind fails and its waiver was not given).
        waived: the option that made a failing kind a note, when given.
    """

    kind: str
    position: int | None
    before: str
    after: str
    axis: str = ""
    members: list[Member] = field(default_factory=list)
    failing: bool = False
    waived: str | None = None

    @property
    def change(self) -> Change:
        return Change(self.kind, self.before, self.after, self.position)

    @property
    def title(self) -> str:
        return title(self.change)

    @property
    def slots(self) -> list[Slot]:
        return [m.pair.slot for m in self.members]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "axis": self.axis or None, "position": self.position, "before": self.before,
                "after": self.after, "title": self.title, "failing": self.failing, "waived": self.waived,
                "cells": [{"slot": m.pair.slot.label(), "ref": m.pair.slot.ref, "env": m.pair.slot.env,
                           "variant": m.pair.slot.variant, "format": m.pair.slot.format,
                           "before": m.pair.before.cell if m.pair.before else None,
                           "after": m.pair.after.cell if m.pair.after else None, "detail": m.detail}
                          for m in self.members]}


def group(pairs: Iterable[Pair], *, accept_workarounds: bool = False, allow_missing: bool = False) -> list[Group]:
    """The changes of every pair, identical ones grouped; failing groups first, then in KINDS order.

    Args:
        accept_workarounds: newly needed workarounds (exports and compiles) are notes, not failures.
        allow_missing: baseline cells with no current result are notes (the gate's --allow-missing).
    """
    waived = {w for w, on in (("--accept-workarounds", accept_workarounds), ("--allow-missing", allow_missing)) if on}
    groups: dict[tuple[str, str, int | None, str, str], Group] = {}
    for pair in pairs:
        for change, axis in pair.attributed():
            kind = KINDS[change.kind]
            g = groups.get((axis, *change.key))
            if g is None:
                off = kind.waiver if kind.waiver in waived else None
                g = groups[(axis, *change.key)] = Group(change.kind, change.position, change.before, change.after,
                                                        axis, failing=kind.fails and off is None,
                                                        waived=off if kind.fails else None)
            g.members.append(Member(pair, change.detail))
    order = list(KINDS)
    return sorted(groups.values(), key=lambda g: (not g.failing, order.index(g.kind), g.axis, g.position or 0,
                                                  g.before, g.after))


# -- how a group reads to people -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One axis of a set of cells, in words: "variants native/1", or "every env" when ``whole``."""

    axis: str  # ref, env, variant, format
    text: str
    whole: bool


def axes(slots: Sequence[Slot], envs: Sequence[str], variants: Sequence[str] = VARIANTS,
         formats: Sequence[str] = FORMAT_NAMES, refs: Sequence[str] = ()) -> list[Part]:
    """Which cells, per axis, without listing each; ``envs``, ``variants``, ``formats`` (and ``refs`` for the gate):
    the question's axes, to say "every" when the cells cover one whole."""
    def axis(name: str, values: set[str], universe: Sequence[str], plural: str) -> Part:
        ordered = [v for v in universe if v in values] + sorted(values - set(universe))
        if len(universe) > 1 and set(universe) <= values:
            return Part(name, f"every {name}", whole=True)
        return Part(name, f"{name if len(ordered) == 1 else plural} {'/'.join(ordered)}", whole=len(universe) == 1
                    and set(universe) == values)

    mine = {s.ref for s in slots if s.ref}
    parts = [axis("ref", mine, refs, "refs")] if mine else []
    return [*parts, axis("env", {s.env for s in slots}, envs, "envs"),
            axis("variant", {s.variant for s in slots}, variants, "variants"),
            axis("format", {s.format for s in slots}, formats, "formats")]


def scope(slots: Sequence[Slot], envs: Sequence[str], variants: Sequence[str] = VARIANTS,
          formats: Sequence[str] = FORMAT_NAMES) -> str:
    """"27 cells: every env · variants native/1/3/4 · formats onnx/onnx-dynamic" (see axes)."""
    n = len(slots)
    return f"{n} cell{'s' if n != 1 else ''}: {' · '.join(p.text for p in axes(slots, envs, variants, formats))}"


# -- finding where a group's change comes from ------------------------------------------------------------------------

# The cell a group is probed on, in order of preference: a native cell (the default export, the one most configs are
# written against); then the variant with the most outputs (groups on outputs #1-#3 then share one cell, so their
# searches share probes); static ONNX (one case to check) before TorchScript before dynamic ONNX (three cases).
_PROBE_VARIANTS = ("native", "4", "3", "1")
_PROBE_FORMATS = ("onnx", "torchscript", "onnx-dynamic")


def representative(g: Group, envs: Sequence[str]) -> Member:
    """The member a search probes (see _PROBE_VARIANTS); among equals the question's first env."""
    def rank(m: Member) -> tuple[int, int, int, str]:
        s = m.pair.slot
        return (_index(_PROBE_VARIANTS, s.variant), _index(_PROBE_FORMATS, s.format), _index(envs, s.env), s.label())

    return min(g.members, key=rank)


def _index(values: Sequence[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


def bisect_value(g: Group) -> Callable[[Facts], Hashable | None] | None:
    """What a probe reads off a result to tell old from new for this group; None where probing cannot tell.

    The value equals the group's value at the old end on a commit (or env) that does not show the change yet; None
    (the probe is skipped, like ``git bisect skip``) when the cell cannot show it: it exported nothing to read, or,
    for a verdict change, it does not work for a cause other than the group's.
    """
    kind = KINDS[g.kind]
    if not kind.bisect or not kind.fails:
        return None
    if g.kind in PER_OUTPUT:
        return _output_value(PER_OUTPUT[g.kind], g.position or 0)
    if g.kind in PER_FILE:
        file_value = PER_FILE[g.kind]
        return lambda f: None if file_value(f) is None else str(file_value(f))
    values: dict[str, Callable[[Facts], Hashable | None]] = {
        "broken": lambda f: "working" if f.works else (f.reading if f.reading == g.after else None),
        "workaround": lambda f: None if not f.works else (f"needs {g.after}" if g.after in f.fixes else
                                                          f"works without {g.after}"),
        "count": lambda f: str(len(f.outputs)) if f.outputs else None,
        "parity": parity_state,
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
    """The group's value at both ends of ``member``'s pair, on the group's axis (what a probe compares with)."""
    value = bisect_value(g)
    start, end = member.pair.ends(g.axis)
    if value is None or start is None or end is None:
        return None
    return value(start), value(end)


__all__ = ["Group", "Member", "Pair", "Part", "Slot", "axes", "bisect_value", "group", "probe_ends", "representative",
           "scope"]
