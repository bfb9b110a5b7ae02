"""The first env of a change: which pinned env, in the config's order, first shows a change that came with the env,
and which packages moved there.

A change known between env X (old) and env Y (new) on one ref is searched over the envs the config lists after X up
to Y, the way ``bisect.search`` searches commits: the median of those still open is probed (one cell, run like any
result into the probes folder), each answer halves them, a probe that cannot tell is skipped. The answer names the
env and the packages whose versions differ from the env before it (what its results say they import).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from harness.config import Config
from harness.decide.diff import Facts
from harness.decide.upgrade.bisect import Bracket, Observation, run_probe
from harness.run.plan import Cell

if TYPE_CHECKING:
    from harness.envs.warm import WarmPool


def between(order: Sequence[str], old: str, new: str) -> list[str]:
    """The envs a change from ``old`` to ``new`` may have come with, in the config's ``order``: those after ``old``
    up to ``new``; just ``new`` when the config does not list ``old`` before it."""
    if old in order and new in order and order.index(old) < order.index(new):
        return list(order[order.index(old) + 1: order.index(new) + 1])
    return [new]


def moved(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The packages (and Python) whose imported version differs: (name, old, new), torch first, then in the results'
    order; versions without their local label (``2.4.1+cu121`` reads ``2.4.1``)."""
    names = sorted(dict.fromkeys([*new, *old]), key=lambda k: k != "torch")
    return [(k, _public(old.get(k, "absent")), _public(new.get(k, "absent"))) for k in names
            if old.get(k) != new.get(k)]


def _public(version: str) -> str:
    try:
        return Version(version).public
    except InvalidVersion:
        return version


@dataclass(frozen=True)
class EnvStep:
    env: str
    seen: Observation

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "state": self.seen.state, "reason": self.seen.reason, "cached": self.seen.cached}


@dataclass
class EnvFinding:
    """Where an env change first shows.

    Attributes:
        old, new: the envs the change lies between (the question's X and Y).
        first: the first env of the config's order that shows it (None: skipped envs hide it, see ``candidates``).
        before: the env just before ``first`` that does not show it (X, or one probed).
        moved: what differs from ``before`` to ``first``: (package, old version, new version).
        candidates: the envs it may be when skipped envs hide the answer.
        steps: every probe in order; searched: False when no search ran (``--no-bisect``, or no config order).
    """

    old: str
    new: str
    first: str | None
    before: str
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    steps: list[EnvStep] = field(default_factory=list)
    searched: bool = True

    @property
    def probes(self) -> int:
        return len(self.steps)

    def summary(self) -> str:
        """One line: "first in py311-torch2.8: torch 2.4.1 → 2.8.0, ... (1 probe)"."""
        packages = ", ".join(f"{name} {a} → {b}" for name, a, b in self.moved) or "no package version moved"
        if self.first is None:
            return f"in one of {', '.join(self.candidates)} (skipped probes hide which)"
        if not self.searched:
            return f"{self.old} → {self.new} (the envs between not searched): {packages}"
        cost = f"; {self.probes} probe{'s' if self.probes != 1 else ''}" if self.probes else ""
        return f"first in {self.first} (from {self.before}{cost}): {packages}"

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "first": self.first, "before": self.before,
                "moved": [list(m) for m in self.moved], "candidates": self.candidates,
                "steps": [s.to_json() for s in self.steps], "searched": self.searched, "probes": self.probes,
                "summary": self.summary()}


def unsearched(old: Facts, new: Facts) -> EnvFinding:
    """What is known without probing: the change lies between the two envs, and these packages moved."""
    return EnvFinding(old.env, new.env, new.env, old.env, moved(old.versions, new.versions), searched=False)


EnvProbe = Callable[[str], tuple[Observation, Facts | None]]


def search_envs(candidates: Sequence[str], old: Facts, new: Facts, probe: EnvProbe,
                log: Callable[[str], None] = lambda _: None) -> EnvFinding:
    """The first of ``candidates`` (the last is ``new``'s env, known to show the change) that shows it, with as few
    probes as a binary search takes; ``old`` and ``new`` are the results at the ends."""
    seen: dict[int, Facts] = {-1: old, len(candidates) - 1: new}
    known = Bracket(-1, len(candidates) - 1)
    steps: list[EnvStep] = []
    while (pick := known.next()) is not None:
        observation, facts = probe(candidates[pick])
        steps.append(EnvStep(candidates[pick], observation))
        log(f"env search {old.env} → {new.env}: probe {len(steps)}: {candidates[pick]} → {observation.state}"
            f"{' (stored)' if observation.cached else ''}{' — ' + observation.reason if observation.reason else ''}")
        if facts is not None:
            seen[pick] = facts
        known.record(pick, observation.state)
    hidden = [candidates[i] for i in sorted(known.skipped) if known.lo < i < known.hi]
    before = old.env if known.lo == -1 else candidates[known.lo]
    if hidden:
        return EnvFinding(old.env, new.env, None, before, candidates=[*hidden, candidates[known.hi]], steps=steps)
    return EnvFinding(old.env, new.env, candidates[known.hi], before,
                      moved(seen[known.lo].versions, seen[known.hi].versions), steps=steps)


@dataclass
class CellEnvProbe:
    """Run one cell (ref, variant, format) in an env through the harness (into the probes folder, reused like any
    result) and tell old from new by ``value`` (see harness/decide/diff/groups.py bisect_value)."""

    config: Config
    ref: str
    variant: str
    format: str
    reports: Path
    cache: Path
    value: Callable[[Facts], Hashable | None]
    before: Hashable
    options: tuple[str, ...] = ()
    log: Callable[[str], None] = print
    pool: Callable[[str], WarmPool] | None = None

    def __call__(self, env: str) -> tuple[Observation, Facts | None]:
        result, cached = run_probe(self.config, Cell(self.ref, env, self.variant, self.format), self.reports,
                                   self.cache, self.options, self.log, self.pool(env) if self.pool else None)
        facts = Facts.from_result(result)
        seen = self.value(facts)
        if seen is None:
            return Observation("skip", result.verdict, cached), None
        return Observation("old" if seen == self.before else "new", str(seen), cached), facts


__all__ = ["CellEnvProbe", "EnvFinding", "EnvStep", "between", "moved", "search_envs", "unsearched"]
