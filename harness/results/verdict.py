"""A verdict as a value: what became of a cell (or of a compile of its artifact), and the one place it becomes words.

A ``Verdict`` is built from typed attempts (``decide``) and read by its fields; its line (``str(verdict)``) is for
people: logs, the report, JUnit messages. No code reads a verdict's words back: to classify, read ``outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

# Outcome classes, in the order reports list them.
Outcome = Literal["works", "workaround", "broken", "error", "skipped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
WORKING: tuple[Outcome, ...] = ("works", "workaround")


class Judged(Protocol):
    """What a verdict is made from, for each attempt: exports and compiles alike."""

    @property
    def status(self) -> str: ...  # pass / fail / error / skip

    @property
    def cause(self) -> str | None: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class Verdict:
    """What a cell's attempts came to.

    Attributes:
        outcome: works, workaround (works with ``fix``), broken (ran; wrong outputs or parity), error (a stage could
            not finish), skipped.
        cause: why the deciding attempt did not work (broken, error); None when it works.
        fix: the workaround the deciding attempt ran with (it worked, or it was the last one tried); None out of the
            box.
        first_cause: the out-of-the-box attempt's cause, when a workaround was tried.
        reason: why the cell was skipped.
    """

    outcome: Outcome
    cause: str | None = None
    fix: str | None = None
    first_cause: str | None = None
    reason: str | None = None

    @property
    def works(self) -> bool:
        return self.outcome in WORKING

    def line(self) -> str:
        """works · works with workaround X (out of the box: C) · broken: C · error: C (with X; out of the box: C0) ·
        skipped: why."""
        first = self.first_cause or "unclassified"
        if self.outcome == "skipped":
            return f"skipped: {self.reason or ''}"
        if self.outcome == "workaround":
            return f"{self.reading()} (out of the box: {first})"
        if self.fix and self.outcome != "works":
            return f"{self.reading()} (with {self.fix}; out of the box: {first})"
        return self.reading()

    def reading(self) -> str:
        """The line without the out-of-the-box cause: how the cell stands for a deployer (works · works with
        workaround X · broken: C · error: C · skipped); two cells with the same reading stand the same way."""
        if self.outcome == "workaround":
            return f"works with workaround {self.fix}"
        if self.outcome in ("broken", "error"):
            return f"{self.outcome}: {self.cause or 'unclassified'}"
        return self.outcome

    def __str__(self) -> str:
        return self.line()


def failed_outcome(status: str) -> Outcome:
    """A deciding attempt that did not pass: ``fail`` ran and judged wrong (broken), anything else stopped (error)."""
    return "broken" if status == "fail" else "error"


def decide(first: Judged, deciding: Judged, fix: str | None) -> Verdict:
    """The verdict of a run of attempts: ``first`` out of the box, ``deciding`` the one that decided (``first``
    itself when no workaround ran), ``fix`` the name of the deciding attempt's workaround."""
    if first.status == "pass":
        return Verdict("works")
    if first.status == "skip":
        return Verdict("skipped", reason=first.message)
    if deciding is first or not fix:
        return Verdict(failed_outcome(first.status), cause=first.cause)
    if deciding.status == "pass":
        return Verdict("workaround", fix=fix, first_cause=first.cause)
    return Verdict(failed_outcome(deciding.status), cause=deciding.cause, fix=fix, first_cause=first.cause)


def read_v1_line(outcome: str, line: str) -> Verdict:
    """A verdict from the words of a file written before verdicts were values (a schema 1 gate baseline keeps only
    its outcome and line). The one reader of verdict text; it knows exactly the v1 renderer's forms."""
    kind: Outcome = outcome if outcome in OUTCOMES else "error"
    if kind == "works":
        return Verdict("works")
    if kind == "skipped":
        return Verdict("skipped", reason=line.removeprefix("skipped: "))
    if kind == "workaround":
        fix, _, first = line.removeprefix("works with workaround ").partition(" (out of the box: ")
        return Verdict("workaround", fix=fix, first_cause=first.removesuffix(")") or None)
    body = line.split(": ", 1)[1] if ": " in line else line
    cause, _, rest = body.partition(" (with ")
    fix, _, first = rest.partition("; out of the box: ")
    return Verdict(kind, cause=cause or None, fix=fix or None, first_cause=first.removesuffix(")") or None)
