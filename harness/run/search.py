"""The workaround search of one cell, as a pure state machine: told why each attempt failed, it says which chain of
workarounds (harness/verify/causes.py) to run next, or that the search is over. No I/O, no processes: the batch runner
(harness/run/variant.py) runs what it proposes.

The rules, in order:
- Workarounds accumulate: each rerun adds the fix for the cause that stopped the previous attempt, while that cause
  has a fix not applied yet (so a cell can read "works with A + B"). The search ends when an attempt passes or fails
  for a cause without a new fix.
- A chain of two or more fixes that another variant of the same ref found for the same first failure and format
  (``Learned``; in this run, or in an earlier run of the same env: harness/run/variant.py keeps them) is tried whole
  first. If it fails for a cause it cannot fix, the search restarts step by step from
  the cell's own out-of-the-box failure (a shorter chain may work on this variant); when that step-by-step search
  arrives at the very chain that already ran, that attempt is the verdict again (``Reuse``), not rerun.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.verify.causes import WORKAROUNDS, Cause, Workaround


@dataclass(frozen=True)
class Learned:
    """A chain of workarounds that made one cell pass, found step by step: the same ref's other variants try it
    whole (``found_by`` names that cell, ``skipped`` the intermediate chains they do not run)."""

    names: tuple[str, ...]
    found_by: str
    skipped: tuple[str, ...]
    met: tuple[str | None, ...] = ()  # the cause each skipped chain stopped at where it was found: why the next fix


@dataclass(frozen=True)
class Run:
    """Run the cell again with the workarounds ``names`` applied together."""

    names: tuple[str, ...]
    borrowed: Learned | None = None


@dataclass(frozen=True)
class Reuse:
    """The chain ``names`` already ran for this cell (borrowed) and failed: its attempt is the verdict."""

    names: tuple[str, ...]


@dataclass
class WorkaroundSearch:
    """One cell's search. ``start`` is why its out-of-the-box attempt failed (None: it passed, or no row knows)."""

    start: Cause | None
    passed: bool
    borrowed: Learned | None = None
    table: Mapping[str, Workaround] = field(default_factory=lambda: WORKAROUNDS)
    fixes: list[Workaround] = field(default_factory=list)
    tried: set[tuple[str, ...]] = field(default_factory=set)
    met: dict[tuple[str, ...], str | None] = field(default_factory=dict)  # each chain's cause when it did not pass
    done: bool = False
    _latest: tuple[tuple[str, ...], Cause | None, bool] | None = None  # chain, its cause, passed

    def __post_init__(self) -> None:
        self.done = self.passed

    def propose(self) -> Run | Reuse | None:
        """The next step, or None when the search is over (the latest attempt is the verdict)."""
        if self.done:
            return None
        if self._latest is None:
            if self.borrowed:
                self.fixes = [self.table[n] for n in self.borrowed.names]
                return Run(self.borrowed.names, self.borrowed)
            cause = self.start
        else:
            names, cause, passed = self._latest
            if passed:
                self.done = True
                return None
            if self.borrowed and names == self.borrowed.names and not self._fix_for(cause):
                self.fixes.clear()  # the borrowed chain failed here for a cause it cannot fix: start over step by step
                cause = self.start
        fix = self._fix_for(cause)
        if fix is None:
            self.done = True
            return None
        self.fixes.append(fix)
        names = tuple(f.name for f in self.fixes)
        if names in self.tried:
            self.done = True
            return Reuse(names)
        return Run(names)

    def tell(self, names: tuple[str, ...], cause: Cause | None, passed: bool) -> None:
        """The outcome of the chain ``names`` (its cause when it did not pass)."""
        self.tried.add(names)
        self.met[names] = None if passed or cause is None else cause.name
        self._latest = (names, cause, passed)

    def learned(self, cell: str) -> Learned | None:
        """What this search found worth sharing: a chain of two or more fixes found step by step that passed."""
        if not self._latest or not self._latest[2] or len(self.fixes) < 2:
            return None
        if self.borrowed and self._latest[0] == self.borrowed.names:
            return None
        names = tuple(f.name for f in self.fixes)
        steps = range(1, len(names))
        return Learned(names, cell, tuple(" + ".join(names[:i]) for i in steps),
                       tuple(self.met.get(names[:i]) for i in steps))

    def _fix_for(self, cause: Cause | None) -> Workaround | None:
        """The cause's workaround when it has one not applied yet."""
        fix = cause.workaround if cause else None
        return fix if fix is not None and fix not in self.fixes else None


def learn_key(commit: str | None, fmt: str, start: Cause | None) -> tuple[str, str, str] | None:
    """Cells of one ref (commit) and format that fail out of the box for the same cause share a chain: the other
    variants of a ref share everything a workaround acts on (the checkpoint load, the exporter call), only Detect
    differs."""
    return (commit or "", fmt, start.name) if start and start.workaround else None
