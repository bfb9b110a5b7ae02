"""One upgrade question, answered: run what is missing on both sides, compare cell pairs, group the changes, find the
first commit of each failing group, and say what to edit.

The question is "ref A -> ref B" (every configured env, or ``--envs``) or "env X -> env Y" on one ref (a torch
upgrade), narrowed by variants and formats. Both sides are ordinary matrix cells in ``<reports>/results`` (reused
while their inputs hold, like any run); bisect probes are ordinary cells too, keyed by commit, in
``<reports>/.upgrade/probes``, so a question asked again, or resumed after Ctrl-C, recomputes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import run
from harness.config import Cell, Config, is_local_repo, plan
from harness.errors import HarnessError
from harness.results import CellResult
from harness.source import open_repo, resolve
from harness.upgrade import advice, compare
from harness.upgrade.bisect import CellProbe, Commit, CommitRange, Finding, commit_range, search
from harness.warm import WarmPool

Log = Callable[[str], None]
PROBES = Path(".upgrade") / "probes"  # under --reports: hidden, so the report and the gate skip it


@dataclass(frozen=True)
class Question:
    """What to compare.

    Attributes:
        a, b: the refs (``--from``, ``--to``); equal for an env question.
        env_a, env_b: ``--from-env`` / ``--to-env``: an env question when given (the ref may change too).
        envs, variants, formats: narrow the cells (None: the config's). ``envs`` is for ref questions.
        accept_workarounds: newly needed workarounds are notes, not failures.
        bisect: find the first commit of each failing group.
    """

    a: str
    b: str
    env_a: str | None = None
    env_b: str | None = None
    envs: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    formats: tuple[str, ...] | None = None
    accept_workarounds: bool = False
    bisect: bool = True

    @property
    def env_question(self) -> bool:
        return self.env_a is not None

    @property
    def title(self) -> str:
        if not self.env_question:
            return f"Upgrade {self.a} → {self.b}"
        if self.a == self.b:
            return f"Upgrade {self.env_a} → {self.env_b} on {self.a}"
        return f"Upgrade {self.a} on {self.env_a} → {self.b} on {self.env_b}"

    def to_json(self) -> dict[str, Any]:
        return {"from": self.a, "to": self.b, "from_env": self.env_a, "to_env": self.env_b,
                "envs": list(self.envs) if self.envs else None,
                "variants": list(self.variants) if self.variants else None,
                "formats": list(self.formats) if self.formats else None,
                "accept_workarounds": self.accept_workarounds, "bisect": self.bisect, "title": self.title}


@dataclass
class GroupAnswer:
    """A group with what the answer adds: the edits, and the first commit (or why there is none)."""

    group: compare.Group
    scope: str
    edits: list[advice.Edit]
    finding: Finding | None = None
    probe_cell: str | None = None  # "py311-torch2.4 · native · onnx": the cell the bisect probed
    not_bisected: str = ""  # why there is no search, for a failing group

    def to_json(self) -> dict[str, Any]:
        return {**self.group.to_json(), "scope": self.scope, "edits": [e.to_json() for e in self.edits],
                "bisect": self.finding.to_json() | {"summary": self.finding.summary(), "cell": self.probe_cell}
                if self.finding else None, "not_bisected": self.not_bisected or None}


@dataclass
class Answer:
    question: Question
    envs: list[str]
    variants: list[str]
    formats: list[str]
    span: CommitRange | None
    notes: list[str]
    pairs: list[compare.Pair]
    groups: list[GroupAnswer] = field(default_factory=list)
    not_bisected: str = ""  # why no group was bisected (an env question, --no-bisect)
    computed: int = 0  # cells run by this question (the rest were reused)
    reused: int = 0
    seconds: float = 0.0
    source: str = ""

    @property
    def failing(self) -> list[GroupAnswer]:
        return [g for g in self.groups if g.group.failing]

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0

    @property
    def probes(self) -> int:
        return sum(g.finding.probes for g in self.groups if g.finding)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "schema": SCHEMA, "question": self.question.to_json(), "source": self.source,
                "envs": self.envs, "variants": self.variants, "formats": self.formats,
                "range": self.span.to_json() if self.span else None, "notes": self.notes,
                "not_bisected": self.not_bisected or None,
                "pairs": len(self.pairs), "computed": self.computed, "reused": self.reused,
                "failing": len(self.failing), "notes_count": len(self.groups) - len(self.failing),
                "probes": self.probes, "probes_stored": sum(g.finding.cached for g in self.groups if g.finding),
                "exit_code": self.exit_code, "seconds": round(self.seconds, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "groups": [g.to_json() for g in self.groups]}


KIND = "yolov5-export-matrix upgrade"
SCHEMA = 1


def check(config: Config, q: Question) -> tuple[list[str], list[str], list[str]]:
    """The envs, variants and formats of the question, after checking its names; raises a one-line HarnessError."""
    if (q.env_a is None) != (q.env_b is None):
        raise HarnessError("upgrade: --from-env and --to-env go together (a torch upgrade on one ref: --from REF "
                           "--from-env OLD --to-env NEW)")
    if q.env_question:
        if q.envs:
            raise HarnessError("upgrade: --envs narrows a ref upgrade; with --from-env/--to-env the envs are those two")
        if q.env_a == q.env_b and q.a == q.b:
            raise HarnessError(f"upgrade: --from-env and --to-env are both {q.env_a} on {q.a} — nothing changes; "
                               f"pass two different envs")
        envs = [q.env_a or "", q.env_b or ""]
    else:
        if q.a == q.b:
            raise HarnessError(f"upgrade: --from and --to are both {q.a} — nothing changes; pass two different refs "
                               f"(or --from-env/--to-env for a torch upgrade on one ref)")
        envs = list(q.envs) if q.envs else list(config.envs)
    cells = plan(config, refs=[q.a, q.b], envs=list(dict.fromkeys(envs)), variants=q.variants, formats=q.formats)
    variants = list(dict.fromkeys(c.variant for c in cells))
    formats = list(dict.fromkeys(c.format for c in cells))
    return envs, variants, formats


def ask(config: Config, q: Question, reports: Path, cache: Path, log: Log = run.log_stderr) -> Answer:
    """Answer ``q``: see the module docstring. Raises HarnessError (one line) on bad input before running anything;
    KeyboardInterrupt after Ctrl-C (cells and probes saved so far stay, and a rerun resumes from them)."""
    started = time.time()
    envs, variants, formats = check(config, q)
    configured = config.source.repo
    url = run.choose_source(config, cache, log)
    # Every run of this question (both sides, each probe) uses the repository chosen here: no reachability check
    # per probe, and the commits of the range are those the probes check out.
    config = dataclasses.replace(config, source=dataclasses.replace(config.source, repo=url))
    repo = open_repo(url, cache=cache, fetch=is_local_repo(url))
    span: CommitRange | None = None
    if q.a != q.b:
        span = commit_range(repo, q.a, q.b)
    else:
        resolve(repo, q.a)  # an unknown ref fails here, in one line with the closest tags
    with _Asking(config, q, reports, cache, log) as asking:
        done = asking.run_sides(envs, variants, formats)
        answer = answer_of(q, envs, variants, formats, done, span, source=url)
        if url != configured:
            answer.notes.append(f"{configured} is unreachable: the PyPI stand-ins answer (one commit per stand-in), "
                                f"so a first commit names a stand-in release, not an upstream commit")
        answer.computed = sum(1 for r in done.values() if r.created >= started)
        answer.reused = len(done) - answer.computed
        answer.not_bisected = asking.not_bisected(span)
        for ga in answer.groups:
            # One upstream change often shows in several groups (a rename in every variant): the commits found so
            # far are checked first, two probes each, before a full search.
            hints = [g.finding.first for g in answer.groups if g.finding and g.finding.first]
            asking.bisect(span, ga, answer.envs, hints)
    answer.seconds = time.time() - started
    return answer


def answer_of(q: Question, envs: list[str], variants: list[str], formats: list[str], done: dict[str, CellResult],
              span: CommitRange | None = None, source: str = "") -> Answer:
    """The answer from results (by cell id), before any bisect: pairs, groups, scopes and edits."""
    answer = Answer(q, envs if not q.env_question else [_env_label(q)], variants, formats, span,
                    list(span.notes) if span else [], pairs(q, envs, variants, formats, done), source=source)
    after = {(p.slot.env, p.slot.variant, p.slot.format): p.after for p in answer.pairs if p.after}
    names = (q.a, q.b) if q.a != q.b else (q.env_a or "", q.env_b or "")
    sides = advice.Sides(names[0], names[1], after, answer.envs, variants, formats)
    for g in compare.group(answer.pairs, accept_workarounds=q.accept_workarounds):
        answer.groups.append(GroupAnswer(g, compare.scope(g.slots, answer.envs, variants, formats),
                                         advice.edits(g, sides)))
    return answer


def _env_label(q: Question) -> str:
    return f"{q.env_a} → {q.env_b}"


def pairs(q: Question, envs: list[str], variants: list[str], formats: list[str],
          done: dict[str, CellResult]) -> list[compare.Pair]:
    """One pair per slot: (env, variant, format) of a ref question, (X → Y, variant, format) of an env question;
    ``done``: results by cell id (a slot whose result is absent has None on that side)."""
    found = []
    for env in (envs if not q.env_question else [_env_label(q)]):
        env_a, env_b = (q.env_a or "", q.env_b or "") if q.env_question else (env, env)
        for v in variants:
            for f in formats:
                a, b = done.get(Cell(q.a, env_a, v, f).id), done.get(Cell(q.b, env_b, v, f).id)
                found.append(compare.Pair(compare.Slot(env, v, f), compare.Facts.of(a) if a else None,
                                          compare.Facts.of(b) if b else None))
    return found


@dataclass
class _Asking:
    """The runs of one question: both sides, then the probes, sharing one warm pool per env (torch imported once)."""

    config: Config
    q: Question
    reports: Path
    cache: Path
    log: Log
    pools: dict[str, WarmPool] = field(default_factory=dict)

    def __enter__(self) -> _Asking:
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in self.pools.values():
            pool.close()

    def pool(self, env: str) -> WarmPool:
        if env not in self.pools:
            self.pools[env] = run.warm_pool(self.config, env, self.cache)
        return self.pools[env]

    def run_sides(self, envs: list[str], variants: list[str], formats: list[str]) -> dict[str, CellResult]:
        """Run (or reuse) the cells of both sides, env by env; results by cell id."""
        q = self.q
        wanted: dict[str, list[str]] = {}
        if q.env_question:
            wanted.setdefault(q.env_a or "", []).append(q.a)
            wanted.setdefault(q.env_b or "", []).append(q.b)
        else:
            wanted = {env: [q.a, q.b] for env in envs}
        done: dict[str, CellResult] = {}
        for env, refs in wanted.items():
            opts = run.Options(reports=self.reports, cache=self.cache, refs=list(dict.fromkeys(refs)),
                               variants=variants, formats=formats)
            for result in run.run_env(self.config, env, opts, log=self.log, workers=self.pool(env)):
                done[result.cell] = result
        return done

    def not_bisected(self, span: CommitRange | None) -> str:
        """Why no group of this question is bisected, or "" when they are."""
        q = self.q
        if not q.bisect:
            return "--no-bisect"
        if span is None:
            return f"the ref is the same ({q.a}): the changes come with the env, there is no commit to find"
        if q.env_question:
            return ("both the ref and the env change: ask one question at a time (--from/--to in one env, then "
                    "--from-env/--to-env on one ref) to find the commits")
        return ""

    def bisect(self, span: CommitRange | None, ga: GroupAnswer, envs: list[str], hints: list[Commit]) -> None:
        """Find the first commit of a failing group, or say why not."""
        g, q = ga.group, self.q
        if not g.failing or self.not_bisected(span):
            return
        why = ("a compile probe is minutes of tpu-mlir per commit: not bisected; the first commits of the other "
               "groups may be its cause" if g.kind.startswith("compile") else "")
        member = compare.representative(g, envs)
        ends = compare.probe_ends(g, member)
        value = compare.bisect_value(g)
        if why or ends is None or value is None or span is None:
            ga.not_bisected = why or "this kind of change is not bisected"
            return
        slot = member.pair.slot
        probe = CellProbe(self.config, slot.env, slot.variant, slot.format, reports=self.reports / PROBES,
                          cache=self.cache, value=lambda r: value(compare.Facts.of(r)), before=ends[0],
                          after=ends[1], log=self.log, workers=self.pool(slot.env))
        self.log(f"bisect {g.title} on {slot.label()}: {len(span.commits)} commit(s) in {q.a}..{q.b}")
        ga.finding = search(span, probe, self.log, hints=hints)
        ga.probe_cell = slot.label()


__all__ = ["KIND", "PROBES", "SCHEMA", "Answer", "GroupAnswer", "Question", "answer_of", "ask", "check", "pairs"]
