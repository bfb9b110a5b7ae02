"""One upgrade question, answered: run what is missing on both sides, compare cell pairs, group the changes, find
where each failing group comes from, and say what to edit.

The question is "ref A -> ref B" (every configured env, or ``--envs``), "env X -> env Y" on one ref (a torch upgrade),
or both at once ("A in X -> B in Y"), narrowed by variants and formats. Both sides are ordinary matrix cells in
``<reports>/results`` (reused while their inputs hold, like any run); with both axes the corner "B in X" runs too, and
tells the changes YOLOv5 made (found by bisecting the commits A..B in X) from those the env made (found by probing
the config's envs from X to Y in B). Where an ONNX cell's outputs carry names the exporter made up, the cells run
again with every output's name pinned (the export option ``pinned output names``, checked like a workaround) and the
pinned names are compared. Probes and pinned runs are ordinary cells too, in ``<reports>/.upgrade/``, so a question
asked again, or resumed after Ctrl-C, recomputes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import Config, is_local_repo
from harness.decide.diff import Facts, Group, Pair, Slot, bisect_value, group, probe_ends, representative, scope
from harness.decide.upgrade import advice, envsearch
from harness.decide.upgrade.bisect import CellProbe, Commit, CommitRange, Finding, commit_range, search
from harness.envs.warm import WarmPool
from harness.errors import HarnessError
from harness.results.model import CellResult
from harness.run import matrix as run
from harness.run.plan import Cell, plan
from harness.sources.checkout import open_repo, resolve
from harness.verify.causes import PINNED_NAMES

Log = Callable[[str], None]
# Under --reports, hidden, so the report and the gate skip them: bisect probes, and the runs with pinned names (apart,
# as their cells have the same ids as the out-of-the-box ones).
PROBES = Path(".upgrade") / "probes"
PINNED = Path(".upgrade") / "pinned"
PINNED_PROBES = Path(".upgrade") / "pinned-probes"


@dataclass(frozen=True)
class Question:
    """What to compare.

    Attributes:
        a, b: the refs (``--from``, ``--to``); equal for an env question.
        env_a, env_b: ``--from-env`` / ``--to-env``: an env question when given (the ref may change too: both axes).
        envs, variants, formats: narrow the cells (None: the config's). ``envs`` is for ref questions.
        accept_workarounds: newly needed workarounds are notes, not failures.
        bisect: find where each failing group comes from (a commit, or an env).
        pin_names: compare pinned output names where the out-of-the-box ones are made up (see the module docstring).
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
    pin_names: bool = True

    @property
    def env_question(self) -> bool:
        return self.env_a is not None

    @property
    def both_axes(self) -> bool:
        return self.env_question and self.a != self.b

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
                "accept_workarounds": self.accept_workarounds, "bisect": self.bisect, "pin_names": self.pin_names,
                "title": self.title}


@dataclass
class GroupAnswer:
    """A group with what the answer adds: its edits (indices into the answer's edits), and where it comes from: the
    first commit (a ref change), the first env (an env change), or why that was not searched."""

    group: Group
    scope: str
    edits: list[int]
    finding: Finding | None = None
    env_finding: envsearch.EnvFinding | None = None
    probe_cell: str | None = None  # "py311-torch2.4 · native · onnx": the cell the search probed
    not_bisected: str = ""  # why there is no search, for a failing group

    def to_json(self) -> dict[str, Any]:
        return {**self.group.to_json(), "scope": self.scope, "edits": self.edits,
                "bisect": self.finding.to_json() | {"summary": self.finding.summary(), "cell": self.probe_cell}
                if self.finding else None,
                "env_search": self.env_finding.to_json() | {"cell": self.probe_cell} if self.env_finding else None,
                "not_bisected": self.not_bisected or None}


def grouped(groups: Sequence[Group], sides: advice.Sides) -> tuple[list[GroupAnswer], list[advice.Edit]]:
    """Groups with their scopes and edits, each edit once (the gate's answer too)."""
    edits, per_group = advice.plan(groups, sides)
    return [GroupAnswer(g, scope(g.slots, sides.envs, sides.variants, sides.formats), mine)
            for g, mine in zip(groups, per_group, strict=True)], edits


@dataclass
class Answer:
    question: Question
    envs: list[str]
    variants: list[str]
    formats: list[str]
    span: CommitRange | None
    notes: list[str]
    pairs: list[Pair]
    groups: list[GroupAnswer] = field(default_factory=list)
    edits: list[advice.Edit] = field(default_factory=list)
    not_bisected: str = ""  # why no group was searched (--no-bisect)
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
        return sum(g.finding.probes for g in self.groups if g.finding) + \
            sum(g.env_finding.probes for g in self.groups if g.env_finding)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "schema": SCHEMA, "question": self.question.to_json(), "source": self.source,
                "envs": self.envs, "variants": self.variants, "formats": self.formats,
                "range": self.span.to_json() if self.span else None, "notes": self.notes,
                "not_bisected": self.not_bisected or None,
                "pairs": len(self.pairs), "pinned": sum(1 for p in self.pairs if p.pinned),
                "computed": self.computed, "reused": self.reused,
                "failing": len(self.failing), "notes_count": len(self.groups) - len(self.failing),
                "probes": self.probes, "probes_stored": sum(g.finding.cached for g in self.groups if g.finding),
                "exit_code": self.exit_code, "seconds": round(self.seconds, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "groups": [g.to_json() for g in self.groups], "edits": [e.to_json() for e in self.edits]}


KIND = "yolov5-export-matrix upgrade"
SCHEMA = 2  # 2: one group per change (axis, attribution), edits once at the top level, groups point at them


def check(config: Config, q: Question) -> tuple[list[str], list[str], list[str]]:
    """The envs, variants and formats of the question, after checking its names; raises a one-line HarnessError."""
    if (q.env_a is None) != (q.env_b is None):
        raise HarnessError("upgrade: --from-env and --to-env go together (a torch upgrade on one ref: --from REF "
                           "--from-env OLD --to-env NEW; both at once: add --to NEW_REF)")
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
    run.say_box(config, log)  # once: every run below is quiet about it
    with _Asking(config, q, reports, cache, log) as asking:
        done = asking.run_sides(envs, variants, formats)
        pinned = asking.run_pinned(pairs(q, envs, variants, formats, done)) if q.pin_names else {}
        answer = answer_of(q, envs, variants, formats, done, span, source=url, pinned=pinned)
        if url != configured:
            answer.notes.append(f"{configured} is unreachable: the PyPI stand-ins answer (one commit per stand-in), "
                                f"so a first commit names a stand-in release, not an upstream commit")
        answer.computed = sum(1 for r in [*done.values(), *pinned.values()] if r.created >= started)
        answer.reused = len(done) + len(pinned) - answer.computed
        answer.not_bisected = "" if q.bisect else "--no-bisect"
        for ga in answer.groups:
            if not (q.bisect and ga.group.failing):
                continue
            if ga.group.axis == "env":
                asking.find_env(ga, answer.envs)
            else:
                # One upstream change often shows in several groups (a rename in every variant): the commits found
                # so far are checked first, two probes each, before a full search.
                hints = [g.finding.first for g in answer.groups if g.finding and g.finding.first]
                asking.bisect(span, ga, answer.envs, hints)
    answer.seconds = time.time() - started
    return answer


def answer_of(q: Question, envs: list[str], variants: list[str], formats: list[str], done: dict[str, CellResult],
              span: CommitRange | None = None, source: str = "",
              pinned: dict[str, CellResult] | None = None) -> Answer:
    """The answer from results (by cell id; ``pinned``: the runs with pinned names), before any search: pairs,
    groups, scopes, edits, and each env group's packages."""
    found = pairs(q, envs, variants, formats, done)
    notes = list(span.notes) if span else []
    if pinned:
        found, failed = pin(found, pinned)
        notes += failed
    answer = Answer(q, envs if not q.env_question else [_env_label(q)], variants, formats, span, notes, found,
                    source=source)
    after = {(p.slot.env, p.slot.variant, p.slot.format): p.after for p in found if p.after}
    names = (q.a, q.b) if not q.env_question else (f"{q.a} on {q.env_a}", f"{q.b} on {q.env_b}") \
        if q.both_axes else (q.env_a or "", q.env_b or "")
    sides = advice.Sides(names[0], names[1], after, answer.envs, variants, formats)
    answer.groups, answer.edits = grouped(group(found, accept_workarounds=q.accept_workarounds), sides)
    for ga in answer.groups:
        if ga.group.axis == "env":
            start, end = representative(ga.group, answer.envs).pair.ends("env")
            ga.env_finding = envsearch.unsearched(start, end) if start and end else None
    return answer


def _env_label(q: Question) -> str:
    return f"{q.env_a} → {q.env_b}"


def pairs(q: Question, envs: list[str], variants: list[str], formats: list[str],
          done: dict[str, CellResult]) -> list[Pair]:
    """One pair per slot: (env, variant, format) of a ref question, (X → Y, variant, format) of an env question, with
    the corner (B in X) when the ref changes too; ``done``: results by cell id (a slot whose result is absent has None
    on that side)."""
    def facts(ref: str, env: str, variant: str, fmt: str) -> Facts | None:
        result = done.get(Cell(ref, env, variant, fmt).id)
        return Facts.from_result(result) if result else None

    found = []
    for env in (envs if not q.env_question else [_env_label(q)]):
        env_a, env_b = (q.env_a or "", q.env_b or "") if q.env_question else (env, env)
        for v in variants:
            for f in formats:
                pair = Pair(Slot(env, v, f), facts(q.a, env_a, v, f), facts(q.b, env_b, v, f),
                            axis="ref" if not q.env_question else "env" if not q.both_axes else "")
                if q.both_axes:
                    pair.corner = facts(q.b, env_a, v, f)
                found.append(pair)
    return found


def _sides(pair: Pair) -> list[Facts]:
    return [f for f in (pair.before, pair.after, pair.corner) if f is not None]


def needs_pinning(pair: Pair) -> bool:
    """An ONNX pair where a deploy config would have to name an output the exporter made up, on either side."""
    return any(f.onnx and f.auto_names for f in _sides(pair))


def pin(found: list[Pair], pinned: dict[str, CellResult]) -> tuple[list[Pair], list[str]]:
    """The pairs with made-up names compared on their pinned runs instead, where the option checks out: every side
    ran with it and stands as it did without (same outcome, same workarounds). Returns the pairs and a note for each
    pair where it did not."""
    out, notes = [], []
    for pair in found:
        if not needs_pinning(pair):
            out.append(pair)
            continue
        runs = {f.cell: pinned.get(f.cell) for f in _sides(pair)}
        again = {cell: Facts.from_result(r) for cell, r in runs.items() if r is not None}
        bad = [f for f in _sides(pair) if f.cell not in again or
               (again[f.cell].outcome, again[f.cell].fixes) != (f.outcome, f.fixes)]
        if bad:
            notes.append(f"{PINNED_NAMES.name} did not check out on {pair.slot.label()}: "
                         + "; ".join(f"{f.cell} reads {again[f.cell].reading if f.cell in again else 'no result'} "
                                     f"with it ({f.reading} without)" for f in bad))
            out.append(pair)
            continue
        was = " → ".join(f"`{advice.output_names(f)}`" for f in (pair.before, pair.after) if f)
        out.append(dataclasses.replace(pair, before=again[pair.before.cell] if pair.before else None,
                                       after=again[pair.after.cell] if pair.after else None,
                                       corner=again[pair.corner.cell] if pair.corner else None,
                                       pinned=f"out of the box {was}"))
    return out, notes


@dataclass
class _Asking:
    """The runs of one question: both sides, the pinned runs, then the probes, sharing one warm pool per env (torch
    imported once)."""

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

    def run_cells(self, wanted: dict[str, list[str]], variants: list[str], formats: list[str], reports: Path,
                  options: tuple[str, ...] = ()) -> dict[str, CellResult]:
        """Run (or reuse) refs x variants x formats in each env of ``wanted`` (env -> refs); results by cell id."""
        done: dict[str, CellResult] = {}
        for env, refs in wanted.items():
            opts = run.Options(reports=reports, cache=self.cache, refs=list(dict.fromkeys(refs)), variants=variants,
                               formats=formats, options=options, announce=False)
            for result in run.run_env(self.config, env, opts, log=self.log, workers=self.pool(env)):
                done[result.cell] = result
        return done

    def run_sides(self, envs: list[str], variants: list[str], formats: list[str]) -> dict[str, CellResult]:
        """Both sides (and the corner B in X when both axes change), env by env."""
        q = self.q
        wanted: dict[str, list[str]] = {}
        if q.env_question:
            wanted.setdefault(q.env_a or "", []).extend([q.a, q.b] if q.both_axes else [q.a])
            wanted.setdefault(q.env_b or "", []).append(q.b)
        else:
            wanted = {env: [q.a, q.b] for env in envs}
        return self.run_cells(wanted, variants, formats, self.reports)

    def run_pinned(self, found: list[Pair]) -> dict[str, CellResult]:
        """The cells of the pairs with made-up names again, with the export option pinning every output's name."""
        todo = [p for p in found if needs_pinning(p)]
        if not todo:
            return {}
        wanted: dict[str, list[str]] = {}
        for pair in todo:
            for f in _sides(pair):
                wanted.setdefault(f.env, []).append(f.ref)
        self.log(f"upgrade: {len(todo)} cell pair(s) have ONNX output names the exporter made up: running them with "
                 f"`{PINNED_NAMES.name}` to compare stable names")
        return self.run_cells(wanted, list(dict.fromkeys(p.slot.variant for p in todo)),
                              list(dict.fromkeys(p.slot.format for p in todo)), self.reports / PINNED,
                              (PINNED_NAMES.name,))

    def bisect(self, span: CommitRange | None, ga: GroupAnswer, envs: list[str], hints: list[Commit]) -> None:
        """Find the first commit of a failing group of the ref axis, or say why not."""
        g, q = ga.group, self.q
        why = ("a compile probe is minutes of tpu-mlir per commit: not bisected; the first commits of the other "
               "groups may be its cause" if g.kind.startswith("compile") else "")
        member = representative(g, envs)
        ends = probe_ends(g, member)
        value = bisect_value(g)
        start = member.pair.ends("ref")[0]
        if why or ends is None or value is None or span is None or start is None:
            ga.not_bisected = why or "this kind of change is not bisected"
            return
        slot = member.pair.slot
        options = tuple(start.options)
        probe = CellProbe(self.config, start.env, slot.variant, slot.format,
                          reports=self.reports / (PINNED_PROBES if options else PROBES), cache=self.cache,
                          value=lambda r: value(Facts.from_result(r)), before=ends[0], after=ends[1], log=self.log,
                          workers=self.pool(start.env), options=options)
        ga.probe_cell = " · ".join((start.env, slot.variant, slot.format))
        self.log(f"bisect {g.title} on {ga.probe_cell}: {len(span.commits)} commit(s) in {q.a}..{q.b}")
        ga.finding = search(span, probe, self.log, hints=hints)

    def find_env(self, ga: GroupAnswer, envs: list[str]) -> None:
        """Find the first env (in the config's order) of a failing group of the env axis."""
        g = ga.group
        member = representative(g, envs)
        ends = probe_ends(g, member)
        value = bisect_value(g)
        start, end = member.pair.ends("env")
        if ends is None or value is None or start is None or end is None:
            ga.not_bisected = ("a compile probe is minutes of tpu-mlir per env: not searched" if
                               g.kind.startswith("compile") else "this kind of change is not searched")
            return
        slot = member.pair.slot
        options = tuple(end.options)
        candidates = envsearch.between(list(self.config.envs), start.env, end.env)
        probe = envsearch.CellEnvProbe(self.config, end.ref, slot.variant, slot.format,
                                       self.reports / (PINNED_PROBES if options else PROBES), self.cache, value,
                                       ends[0], options, self.log, self.pool)
        ga.probe_cell = " · ".join((end.ref, slot.variant, slot.format))
        self.log(f"env search {g.title} on {ga.probe_cell}: {len(candidates) - 1} env(s) between {start.env} and "
                 f"{end.env}")
        ga.env_finding = envsearch.search_envs(candidates, start, end, probe, self.log)


__all__ = ["KIND", "PINNED", "PROBES", "SCHEMA", "Answer", "GroupAnswer", "Question", "answer_of", "ask", "check",
           "grouped", "pairs", "pin"]
