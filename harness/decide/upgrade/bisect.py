"""The first commit of a change: a binary search over the first-parent history between two refs.

A change (a group of identical cell changes, see the issue's "grouped changes") is known at its two ends: ref A shows
the ``before`` value, ref B the ``after`` value. This module finds the first commit between them that no longer shows
``before``, the way ``git bisect`` does, probing one representative cell per step through a ``Probe`` callable. The
search itself (``search``) knows nothing of the harness: a probe answers ``old``, ``new`` or ``skip`` (with a reason)
for a commit. ``CellProbe`` is the real probe: it runs the cell through the harness at that commit into a results
folder of its own, so probe results are ordinary cached results keyed by commit (an interrupted search resumes from
them, and asking again over the same range costs nothing).

Why first-parent: upstream merges pull requests as squashed commits on master, and a tag's first-parent chain is the
sequence of states users could have checked out; commits inside a merged branch are not (and often do not run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import git

from harness.config import Config
from harness.errors import HarnessError
from harness.results.model import CellResult
from harness.run.plan import Cell
from harness.sources.checkout import resolve

if TYPE_CHECKING:
    from harness.envs.warm import WarmPool

State = Literal["old", "new", "skip"]


@dataclass(frozen=True)
class Commit:
    """One commit as a report names it.

    Attributes:
        sha: full SHA.
        subject: first line of the message.
        date: committer date, ISO 8601 with its offset (when it landed on the branch, for squash-merged PRs).
    """

    sha: str
    subject: str
    date: str

    @classmethod
    def of(cls, commit: git.Commit) -> Commit:
        summary = commit.summary
        subject = summary.decode(errors="replace") if isinstance(summary, bytes) else summary
        return cls(sha=commit.hexsha, subject=subject, date=commit.committed_datetime.isoformat())

    @property
    def short(self) -> str:
        return self.sha[:12]

    def to_json(self) -> dict[str, str]:
        return {"sha": self.sha, "subject": self.subject, "date": self.date}


@dataclass(frozen=True)
class CommitRange:
    """The commits a search runs over: ``base`` (like A, not probed unless A is not an ancestor of B) and then
    every commit after it on B's first-parent chain, oldest first, B last.

    Attributes:
        a, b: the refs as asked.
        a_sha, b_sha: what they resolved to.
        base: A itself, or the merge base of A and B when A is not an ancestor of B.
        a_is_ancestor: False when A is not in B's history (a fork, a branch cut before A): the range then starts at
            the merge base, whose state is probed first (see ``search``).
        commits: base..B on B's first-parent chain, oldest first; never empty, B last.
        notes: what a reader should know about the range (A not an ancestor, A off the first-parent chain).
    """

    a: str
    b: str
    a_sha: str
    b_sha: str
    base: Commit
    a_is_ancestor: bool
    commits: tuple[Commit, ...]
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.a}..{self.b}"

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "a_sha": self.a_sha, "b_sha": self.b_sha, "base": self.base.to_json(),
                "a_is_ancestor": self.a_is_ancestor, "commits": len(self.commits), "notes": list(self.notes)}


def commit_range(repo: git.Repo, a: str, b: str) -> CommitRange:
    """The first-parent history from ``a`` to ``b``: what ``search`` runs over.

    Args:
        repo: a repository holding both refs (the harness's cached clone, ``harness.sources.checkout.open_repo``).
        a, b: any refs (tags, branches, full or short SHAs); names only, no revision syntax.

    Raises:
        SourceError: an unknown ref (the message lists the closest tags), or an ambiguous short SHA.
        HarnessError: ``a`` and ``b`` are the same commit, have no common history, or ``b`` is an ancestor of
            ``a`` (nothing lies between them in that direction).
    """
    a_sha, b_sha = resolve(repo, a), resolve(repo, b)
    if a_sha == b_sha:
        raise HarnessError(f"upgrade: {a} and {b} are the same commit ({a_sha[:12]}) — nothing changes between them; "
                           f"pass two different refs to --from and --to")
    bases = repo.merge_base(a_sha, b_sha)
    if not bases:
        raise HarnessError(f"upgrade: {a} ({a_sha[:12]}) and {b} ({b_sha[:12]}) have no common history — compare "
                           f"refs of one repository (a fork of it is fine)")
    a_is_ancestor = repo.is_ancestor(repo.commit(a_sha), repo.commit(b_sha))
    base = repo.commit(a_sha) if a_is_ancestor else bases[0]
    if not isinstance(base, git.Commit):  # merge_base's element type is loose in gitpython's stubs
        raise HarnessError(f"upgrade: the merge base of {a} and {b} is not a commit ({base})")
    found = list(repo.iter_commits(f"{base.hexsha}..{b_sha}", first_parent=True, reverse=True))
    if not found:
        raise HarnessError(f"upgrade: {b} ({b_sha[:12]}) is an ancestor of {a} ({a_sha[:12]}): no commits lead from "
                           f"{a} to {b} — swap --from and --to")
    notes: list[str] = []
    if not a_is_ancestor:
        notes.append(f"{a} ({a_sha[:12]}) is not an ancestor of {b}: the search runs from their merge base "
                     f"{base.hexsha[:12]} ({Commit.of(base).subject}); {a}'s own commits since then are not searched")
    elif found[0].parents and found[0].parents[0].hexsha != base.hexsha:
        notes.append(f"{a} is not on {b}'s first-parent history (it came in through a merge): the search runs over "
                     f"{b}'s first-parent commits not contained in {a}")
    return CommitRange(a=a, b=b, a_sha=a_sha, b_sha=b_sha, base=Commit.of(base), a_is_ancestor=a_is_ancestor,
                       commits=tuple(Commit.of(c) for c in found), notes=tuple(notes))


@dataclass(frozen=True)
class Observation:
    """A probe's answer for one commit.

    Attributes:
        state: ``old`` (shows the before value), ``new`` (does not: shows the after value or another one), ``skip``
            (cannot tell: the commit does not check out, patch, build or export for an unrelated cause).
        reason: what was seen (``"4 outputs"``) or why the commit was skipped (the cell's verdict and message).
        cached: answered from a stored result, at no cost.
    """

    state: State
    reason: str = ""
    cached: bool = False


Probe = Callable[[Commit], Observation]


@dataclass(frozen=True)
class Step:
    commit: Commit
    seen: Observation

    def to_json(self) -> dict[str, Any]:
        return {**self.commit.to_json(), "state": self.seen.state, "reason": self.seen.reason,
                "cached": self.seen.cached}


@dataclass(frozen=True)
class Finding:
    """Where a change first shows.

    Attributes:
        span: the range searched.
        first: the first commit that shows the change; None when skipped commits hide it (see ``candidates``) or
            when the merge base already shows it (see ``note``).
        candidates: when skipped commits hide the answer: the commits it may be (the skipped ones, then the first
            commit known to show the change), like ``git bisect``'s "the first bad commit could be any of".
        steps: every probe in the order it ran.
        note: a sentence for the reader when there is no single answer.
    """

    span: CommitRange
    first: Commit | None
    candidates: tuple[Commit, ...] = ()
    steps: tuple[Step, ...] = ()
    note: str = ""
    hints: int = 0  # hint commits checked first (see search)

    @property
    def probes(self) -> int:
        return len(self.steps)

    @property
    def skipped(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.seen.state == "skip")

    @property
    def cached(self) -> int:
        """Probes answered from stored results (a resumed or repeated search)."""
        return sum(1 for s in self.steps if s.seen.cached)

    @property
    def budget(self) -> int:
        """The most probes the search may take: ⌈log2 N⌉ for N commits, one per skipped commit, one for the merge
        base when A is not an ancestor of B, and two per hint checked."""
        return max_probes(len(self.span.commits), len(self.skipped), with_base=not self.span.a_is_ancestor) + \
            2 * self.hints

    @property
    def all_skipped(self) -> bool:
        """Every commit probed was skipped and none remains: the search learned nothing."""
        return bool(self.steps) and not any(s.seen.state != "skip" for s in self.steps) and self.first is None

    def summary(self) -> str:
        """One line for the console and the reports."""
        cost = f"{self.probes} probe(s), {len(self.skipped)} skipped" + (
            f", {self.cached} from stored results" if self.cached else "")
        if self.first is not None:
            return f"first in {self.first.short} {self.first.subject!r} ({self.first.date[:10]}); {cost}"
        return f"{self.note} ({cost})"

    def to_json(self) -> dict[str, Any]:
        return {"range": self.span.to_json(), "first": self.first.to_json() if self.first else None,
                "candidates": [c.to_json() for c in self.candidates], "probes": self.probes,
                "budget": self.budget, "skipped": [s.to_json() for s in self.skipped],
                "steps": [s.to_json() for s in self.steps], "note": self.note, "hints": self.hints}


def max_probes(commits: int, skips: int, *, with_base: bool = False) -> int:
    """⌈log2 N⌉ + skips (+1 for a merge base probed first): what ``search`` never exceeds."""
    return math.ceil(math.log2(commits)) + skips + (1 if with_base else 0) if commits else 0


def search(span: CommitRange, probe: Probe, log: Callable[[str], None] = lambda _: None,
           hints: Sequence[Commit] = ()) -> Finding:
    """Binary search for the first commit of ``span`` that shows the change, probing as few commits as it can.

    The range's base is taken to show the before value and B the after value (they define the change), so neither
    is probed, except the merge base when A is not an ancestor of B: it is not A, so it is probed first, and when it
    already shows the change there is nothing to find on B's side. Each step probes the median of the commits that
    may still be the answer and were not skipped, so every answered probe halves them (⌈log2 N⌉ answered probes at
    most) and a skipped commit costs one probe and moves the next one to its neighbour, like ``git bisect skip``.

    Args:
        span: from ``commit_range``.
        probe: answers ``old`` / ``new`` / ``skip`` for a commit. Its exceptions (an env that cannot be built,
            Ctrl-C) propagate: they are not properties of a commit.
        log: one line per probe.
        hints: commits that may be the answer (the first commits of other groups of the same question: one upstream
            change often shows in several groups). Each is checked first, with at most two probes (the commit and
            the one before it); when it is the answer the search ends there, otherwise what the probes showed
            narrows the binary search. ``Finding.budget`` counts these two probes per hint.

    Returns:
        The finding; ``first`` is None when skipped commits hide the answer (``candidates`` then lists them) or the
        merge base already shows the change.
    """
    commits = span.commits
    steps: list[Step] = []

    def ask(commit: Commit, remaining: int) -> Observation:
        seen = probe(commit)
        steps.append(Step(commit, seen))
        why = f" — {seen.reason}" if seen.reason else ""
        log(f"bisect {span.label}: probe {len(steps)} ({remaining} commit(s) left): {commit.short} "
            f"{commit.subject[:60]!r} → {seen.state}{' (stored)' if seen.cached else ''}{why}")
        return seen

    if not span.a_is_ancestor:
        seen = ask(span.base, len(commits))
        if seen.state == "new":
            return Finding(span, None, steps=tuple(steps), note=(
                f"the merge base {span.base.short} of {span.a} and {span.b} already shows the change: it came from "
                f"{span.a}'s side, not from {span.b}'s history"))
    known = Bracket(-1, len(commits) - 1)
    tried = _check_hints(commits, hints, known, ask)
    while (pick := known.next()) is not None:
        known.record(pick, ask(commits[pick], len(known.open()) + 1).state)
    return _finding(span, known, tuple(steps), tried)


@dataclass
class Bracket:
    """What the probes so far say about an ordered list (commits, envs) whose last item shows the change: ``lo`` the
    last index known old (-1: the item before the list), ``hi`` the first known new (the last at first), ``skipped``
    the indices that could not tell."""

    lo: int
    hi: int
    skipped: set[int] = field(default_factory=set)

    def open(self) -> list[int]:
        return [i for i in range(self.lo + 1, self.hi) if i not in self.skipped]

    def next(self) -> int | None:
        """The index to probe next: the median of those that may still be the answer, so each answered probe halves
        them (the answer is one of open() + [hi]: probing the k-th of those m leaves k or m - k); None when done."""
        open_ = self.open()
        return open_[(len(open_) + 1) // 2 - 1] if open_ else None

    def record(self, i: int, state: State) -> None:
        if state == "old":
            self.lo = i
        elif state == "new":
            self.hi = i
        else:
            self.skipped.add(i)


def _check_hints(commits: tuple[Commit, ...], hints: Sequence[Commit], known: Bracket,
                 ask: Callable[[Commit, int], Observation]) -> int:
    """Probe each hint and, when it shows the change, the commit before it; stop once the answer is pinned down.
    Returns how many hints were checked (each costs at most two probes)."""
    index = {c.sha: i for i, c in enumerate(commits)}
    tried = 0
    for hint in dict.fromkeys(h for h in hints if h.sha in index):
        if known.hi == known.lo + 1:
            break
        i = index[hint.sha]
        if i not in known.open():
            continue  # already known, skipped, or B itself (never probed)
        tried += 1
        for at in (i, i - 1):  # the commit, then the one before it once the commit shows the change
            if at not in known.open():
                break
            state = ask(commits[at], known.hi - known.lo).state
            known.record(at, state)
            if state != "new":
                break
    return tried


def _finding(span: CommitRange, known: Bracket, steps: tuple[Step, ...], hints: int) -> Finding:
    commits = span.commits
    hidden = tuple(commits[i] for i in sorted(known.skipped) if known.lo < i < known.hi)
    if not hidden:
        return Finding(span, commits[known.hi], steps=steps, hints=hints)
    first_new = commits[known.hi]
    if known.lo == -1 and known.hi == len(commits) - 1 and len(hidden) == len(commits) - 1:
        note = (f"every commit in {span.label} before {span.b} was skipped ({len(hidden)} of {len(commits)}: "
                f"{base_to_b(span)}): the change is in one of them or in {span.b} itself")
    else:
        note = (f"the change is in one of {len(hidden) + 1} commits: {', '.join(c.short for c in hidden)} "
                f"(skipped) or {first_new.short}")
    return Finding(span, None, candidates=(*hidden, first_new), steps=steps, note=note, hints=hints)


def base_to_b(span: CommitRange) -> str:
    """The range as commits, ``<base>..<B>``: what to pass to ``git log`` to look at it."""
    return f"{span.base.short}..{span.b_sha[:12]}"


# -- the real probe: one harness cell at a commit --------------------------------------------------------------------


@dataclass
class CellProbe:
    """Run one cell (env, variant, format) at a commit through the harness, and read the group's value from it.

    The cell runs with ``harness.run.matrix.run_env`` into ``reports`` (``<reports>/.upgrade/probes``: a hidden folder,
    which
    the report and the gate do not read as matrix cells), with the commit's
    SHA as its ref: its result is an ordinary result, reused while its inputs (commit, env pins, model, harness code)
    are unchanged, so a search interrupted by Ctrl-C resumes from the probes already made, and a second search over
    the same range costs nothing.

    Attributes:
        config: the loaded config; its ``[source] repo`` must hold the commits (the repository ``commit_range``
            read).
        env, variant, format: the representative cell of the group.
        reports: the folder probe results go to.
        cache: the harness cache.
        value: reads the attribute that defines the group from a result (e.g. the deciding attempt's output count);
            None when the cell cannot show it (it did not export, for another cause): the commit is then skipped.
        before: the value at A. A commit showing it is ``old``; any other value is ``new`` (the first departure
            from the before value is the commit that broke a config written against it).
        after: the value at B, only to say when a commit shows a third value.
        show: renders a value for the reason line.
        log: the harness run's log lines.
    """

    config: Config
    env: str
    variant: str
    format: str
    reports: Path
    cache: Path
    value: Callable[[CellResult], object | None]
    before: object
    after: object
    show: Callable[[object], str] = str
    log: Callable[[str], None] = print
    # the env's warm pool (harness.run.matrix.warm_pool), shared by every probe: torch imports once
    workers: WarmPool | None = None
    # export options the compared results ran with (harness/verify/causes.py EXPORT_OPTIONS)
    options: tuple[str, ...] = ()

    def __call__(self, commit: Commit) -> Observation:
        result, cached = run_probe(self.config, Cell(commit.sha, self.env, self.variant, self.format), self.reports,
                                   self.cache, self.options, self.log, self.workers)
        return self.observe(result, cached)

    def observe(self, result: CellResult, cached: bool) -> Observation:
        """What the probe's result says: old (shows the before value), new, or skip (cannot tell)."""
        seen = self.value(result)
        if seen is None:
            message = (result.deciding.message.splitlines() or [""])[0][:200]
            reason = result.verdict + (f": {message}" if message else "")
            return Observation("skip", reason, cached)
        if seen == self.before:
            return Observation("old", self.show(seen), cached)
        third = "" if seen == self.after else f" (neither {self.show(self.before)} nor {self.show(self.after)})"
        return Observation("new", f"{self.show(seen)}{third}", cached)


def run_probe(config: Config, cell: Cell, reports: Path, cache: Path, options: tuple[str, ...],
              log: Callable[[str], None], workers: WarmPool | None) -> tuple[CellResult, bool]:
    """Run (or reuse) one probe cell, quietly (the search says one line per probe); its result, and whether it was
    stored already."""
    from harness.run import matrix as run

    started = time.time()
    opts = run.Options(reports=reports, cache=cache, refs=[cell.ref], variants=[cell.variant], formats=[cell.format],
                       options=options, announce=False, cell_lines=False)
    done = run.run_env(config, cell.env, opts, log=log, workers=workers)
    result = next((r for r in done if r.cell == cell.id), None)
    if result is None:
        raise HarnessError(f"upgrade: the probe of {cell.ref} returned no result for {cell.id} — a bug: report it "
                           f"with the run's log")
    return result, result.created < started


__all__ = ["Bracket", "CellProbe", "Commit", "CommitRange", "Finding", "Observation", "Probe", "State", "Step",
           "commit_range", "max_probes", "run_probe", "search"]
