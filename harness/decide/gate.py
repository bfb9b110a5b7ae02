"""The regression gate: today's results against a saved baseline, and an exit code a CI job can stop on.

The gate is the upgrade question asked of a baseline: "the cells as they were" against "the cells as they are", with
the same comparison (harness/decide/diff/) and the same groups. A group fails the gate when a deploy config
written against the baseline breaks or must be checked: a cell that worked and does not now; one that now needs a
workaround it did not (unless --accept-workarounds); outputs renamed, added, dropped or reshaped; the ONNX file's
opset, IR version or external data changed; parity that held and does not; a compile verdict that passed and fails;
a baseline cell with no current result (unless --allow-missing). Fixes, workarounds no longer needed, made-up output
names and new cells are listed as notes. Results from a different kind of source (the upstream repository vs PyPI
stand-ins) are not comparable, so the gate refuses them unless told otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness import prog
from harness.axes import FORMAT_NAMES, VARIANTS
from harness.decide.diff import Facts, OutputFacts, Pair, Slot, group
from harness.decide.upgrade import advice
from harness.decide.upgrade.question import grouped
from harness.errors import HarnessError
from harness.files import write_json
from harness.results.model import CellResult
from harness.results.verdict import read_v1_line

BASELINE_KIND = "yolov5-export-matrix baseline"
# 2: each cell is the comparison's Facts (verdict, workaround, outputs with dtypes and declared dims, ONNX opset / IR /
# external data, parity, compile verdict). Schema 1 files (outcome, verdict, outputs, parity) are still read.
BASELINE_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)


def summarize(result: CellResult) -> dict[str, Any]:
    """What the baseline keeps of one result: enough to compare, small enough to commit next to your deploy code."""
    return Facts.from_result(result).to_json()


def write_baseline(path: Path, current: Iterable[CellResult]) -> int:
    """Save the current results as a baseline file; returns the number of cells saved."""
    cells = {r.cell: summarize(r) for r in current}
    if not cells:
        raise HarnessError(f"gate: no results to save in {path} — run the matrix first "
                           f"({prog.command('run --env all')})")
    write_json(path, {"kind": BASELINE_KIND, "schema": BASELINE_SCHEMA,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cells": cells})
    return len(cells)


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"gate: baseline {path} does not exist — save one first with --write-baseline") from None
    except (OSError, ValueError) as exc:
        raise HarnessError(f"gate: cannot read baseline {path} ({exc}) — write it again with --write-baseline") \
            from None
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND or not isinstance(data.get("cells"), dict):
        raise HarnessError(f"gate: {path} is not a baseline file — write one with --write-baseline")
    if data.get("schema") not in READABLE_SCHEMAS:
        raise HarnessError(f"gate: {path} has baseline schema {data.get('schema')}, this harness reads "
                           f"{', '.join(map(str, READABLE_SCHEMAS))} — write it again with --write-baseline")
    return data


def baseline_facts(cell_id: str, cell: Mapping[str, Any], schema: int) -> Facts:
    """One baseline cell as Facts; a schema 1 cell has no dtypes, ONNX facts or compile verdict (not compared)."""
    if schema != 1:
        return Facts.from_json({**cell, "cell": cell.get("cell") or cell_id})
    line = str(cell.get("verdict", ""))
    old = read_v1_line(str(cell.get("outcome", "error")), line)
    fix = old.fix if old.outcome == "workaround" else None
    cause = None if old.works or old.outcome == "skipped" else old.cause
    return Facts(cell=cell_id, ref=cell["ref"], env=cell["env"], variant=cell["variant"], format=cell["format"],
                 commit=cell.get("commit"), source=cell.get("source"), standin=cell.get("standin"),
                 outcome=old.outcome, verdict=line, reading=old.reading(), fix=fix, cause=cause,
                 outputs=[OutputFacts(name, list(shape)) for name, shape in cell.get("outputs") or []],
                 parity_pass=cell.get("parity_pass"), min_tolerance=cell.get("min_tolerance"))


def _source_kind(facts: Facts) -> str:
    """"a PyPI stand-in" or "the upstream repository": the two are not comparable (another file tree)."""
    return "a PyPI stand-in" if facts.standin else "the upstream repository"


def pairs(baseline: Mapping[str, Any], current: Iterable[CellResult], *, refs: Mapping[str, str] | None = None,
          envs: Mapping[str, str] | None = None, allow_source_change: bool = False) -> list[Pair]:
    """The baseline's cells paired with today's (``refs``/``envs`` map baseline names to current ones:
    ``{"v6.1": "v7.0"}`` compares v6.1's cells with v7.0's); a cell on one side only is a pair with one side None.

    Raises:
        HarnessError: a compared cell comes from another kind of source and allow_source_change is False.
    """
    refs, envs = refs or {}, envs or {}
    schema = int(baseline.get("schema", BASELINE_SCHEMA))
    # A renamed ref or env takes the place of the baseline's own cells of the new name.
    replaced_refs, replaced_envs = set(refs.values()) - set(refs), set(envs.values()) - set(envs)
    before: dict[tuple[str, str, str, str], Facts] = {}
    for cid, cell in baseline["cells"].items():
        if cell["ref"] in replaced_refs or cell["env"] in replaced_envs:
            continue
        facts = baseline_facts(cid, cell, schema)
        before[(refs.get(facts.ref, facts.ref), envs.get(facts.env, facts.env), facts.variant, facts.format)] = facts
    now = {(f.ref, f.env, f.variant, f.format): f for f in (Facts.from_result(r) for r in current)}
    found: list[Pair] = []
    for key in sorted(set(before) | set(now), key=_order):
        old, cur = before.get(key), now.get(key)
        if old and cur and _source_kind(old) != _source_kind(cur) and not allow_source_change:
            raise HarnessError(
                f"gate: {' '.join(key)} ran {_source_kind(old)} in the baseline ({old.source}) but {_source_kind(cur)} "
                f"now ({cur.source}) — compare like with like, or pass --allow-source-change")
        ref, env, variant, fmt = key
        old_ref = old.ref if old else ref
        old_env = old.env if old else env
        slot = Slot(env if old_env == env else f"{old_env} → {env}", variant, fmt,
                    ref if old_ref == ref else f"{old_ref} → {ref}")
        found.append(Pair(slot, old, cur))
    return found


def _order(key: tuple[str, str, str, str]) -> tuple[str, str, int, int]:
    ref, env, variant, fmt = key
    return (ref, env, VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS),
            FORMAT_NAMES.index(fmt) if fmt in FORMAT_NAMES else len(FORMAT_NAMES))


def answer(baseline: Mapping[str, Any], current: list[CellResult], *, label: str, refs: Mapping[str, str] | None = None,
           envs: Mapping[str, str] | None = None, allow_source_change: bool = False, accept_workarounds: bool = False,
           allow_missing: bool = False) -> dict[str, Any]:
    """The gate's grouped changes in the form harness/decide/upgrade/render.py prints (an upgrade answer without a range
    or bisect): ``failing`` counts the failing groups, ``exit_code`` is 1 when there are any."""
    found = pairs(baseline, current, refs=refs, envs=envs, allow_source_change=allow_source_change)
    groups = group(found, accept_workarounds=accept_workarounds, allow_missing=allow_missing)
    env_axis = list(dict.fromkeys(p.slot.env for p in found))
    variants = [v for v in VARIANTS if any(p.slot.variant == v for p in found)]
    formats = [f for f in FORMAT_NAMES if any(p.slot.format == f for p in found)]
    after = {(p.slot.env, p.slot.variant, p.slot.format): p.after for p in found if p.after}
    ref_axis = list(dict.fromkeys(p.slot.ref for p in found))
    answers, edits = grouped(groups, advice.Sides("the baseline", "today's results", after, env_axis, variants,
                                                  formats, ref_axis))
    failing = sum(1 for g in groups if g.failing)
    return {"question": {"title": label}, "pairs": len(found), "envs": env_axis, "variants": variants,
            "formats": formats, "failing": failing, "exit_code": 1 if failing else 0,
            "groups": [a.to_json() for a in answers], "edits": [e.to_json() for e in edits]}


def parse_renames(items: list[str] | None, what: str) -> dict[str, str]:
    """``["v6.1=v7.0"]`` -> ``{"v6.1": "v7.0"}``; a malformed pair is a one-line error."""
    renames: dict[str, str] = {}
    for pair in items or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            example = "v6.1=v7.0" if what == "ref" else "py311-torch2.5=py311-torch2.14"
            raise HarnessError(f"gate: --{what} {pair!r}: expected OLD=NEW, e.g. --{what} {example}")
        renames[old] = new
    return renames
