"""The regression gate: today's results against a saved baseline, and an exit code a CI job can stop on.

A cell fails the gate when it worked in the baseline and does not now, when its output signature (count, names,
shapes: what a compiler config such as tpu-mlir's --output_names is written against) changed, or when parity that
held is now out of tolerance. Everything else that changed (a cell fixed, a workaround now needed, cells added or
gone) is listed but passes. Results from a different kind of source (the upstream repository vs PyPI stand-ins) are
not comparable, so the gate refuses them unless told otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.files import write_json
from harness.errors import HarnessError
from harness.results import CellResult

BASELINE_KIND = "yolov5-export-matrix baseline"
BASELINE_SCHEMA = 1
WORKING = ("works", "workaround")
# Change kinds that fail the gate; the others are reported only.
FAILING = ("regression", "signature", "parity")


@dataclass(frozen=True)
class Change:
    cell: str
    kind: str  # regression / signature / parity / fixed / workaround / new / missing
    before: str
    after: str

    @property
    def fails(self) -> bool:
        return self.kind in FAILING


def summarize(result: CellResult) -> dict[str, Any]:
    """What the baseline keeps of one result: enough to compare, small enough to commit next to your deploy code."""
    parity = result.final_attempt().parity
    tolerances = [p.min_tolerance for p in parity if p.min_tolerance is not None]
    standin = result.standin
    return {
        "ref": result.ref, "env": result.env, "variant": result.variant, "format": result.format,
        "commit": result.commit, "source": result.source,
        "standin": standin.get("distribution") if standin else None,
        "outcome": result.outcome(), "verdict": result.verdict or result.refresh_verdict(),
        "outputs": [[name, shape] for name, shape in result.signature()],
        "parity_pass": all(p.passed for p in parity) if parity else None,
        "min_tolerance": max(tolerances) if tolerances else None,
    }


def write_baseline(path: Path, current: Iterable[CellResult]) -> int:
    """Save the current results as a baseline file; returns the number of cells saved."""
    cells = {r.cell: summarize(r) for r in current}
    if not cells:
        raise HarnessError(f"gate: no results to save in {path} — run the matrix first (nox -s matrix)")
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
    if data.get("schema") != BASELINE_SCHEMA:
        raise HarnessError(f"gate: {path} has baseline schema {data.get('schema')}, this harness reads "
                           f"{BASELINE_SCHEMA} — write it again with --write-baseline")
    return data


def _key(cell: Mapping[str, Any], refs: Mapping[str, str], envs: Mapping[str, str]) -> tuple[str, ...]:
    return (refs.get(cell["ref"], cell["ref"]), envs.get(cell["env"], cell["env"]), cell["variant"], cell["format"])


def _source_kind(cell: Mapping[str, Any]) -> str:
    """"a PyPI stand-in" or "the upstream repository": the two are not comparable (another file tree)."""
    return "a PyPI stand-in" if cell.get("standin") else "the upstream repository"


def _signature_text(outputs: list[list[Any]]) -> str:
    shapes = ", ".join(f"{name or '-'} {'x'.join(str(d) for d in shape)}" for name, shape in outputs)
    return f"{len(outputs)} output{'s' if len(outputs) != 1 else ''}: {shapes}"


def _signature_diff(old: list[list[Any]], new: list[list[Any]]) -> tuple[str, str]:
    """Both signatures when the count changed; otherwise only the outputs that differ, by position."""
    if len(old) != len(new):
        return _signature_text(old), _signature_text(new)
    differ = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]

    def show(outputs: list[list[Any]]) -> str:
        return ", ".join(f"#{i} {outputs[i][0] or '-'} {'x'.join(str(d) for d in outputs[i][1])}" for i in differ)

    return show(old), show(new)


def compare(baseline: Mapping[str, Any], current: Iterable[CellResult], *, refs: Mapping[str, str] | None = None,
            envs: Mapping[str, str] | None = None, allow_source_change: bool = False) -> list[Change]:
    """The changes from ``baseline`` (a read_baseline dict) to ``current`` results, cell by cell.

    Args:
        refs, envs: map baseline names to current ones (``{"v6.1": "v7.0"}`` compares v6.1's cells with v7.0's).
        allow_source_change: compare a stand-in cell with an upstream one (refused by default).

    Raises:
        HarnessError: a compared cell comes from another kind of source and allow_source_change is False.
    """
    refs, envs = refs or {}, envs or {}
    # A renamed ref or env takes the place of the baseline's own cells of the new name.
    replaced_refs, replaced_envs = set(refs.values()) - set(refs), set(envs.values()) - set(envs)
    before = {_key(c, refs, envs): (cid, c) for cid, c in baseline["cells"].items()
              if c["ref"] not in replaced_refs and c["env"] not in replaced_envs}
    now = {_key(s, {}, {}): s for s in (summarize(r) | {"cell": r.cell} for r in current)}
    changes: list[Change] = []
    for key in sorted(set(before) | set(now)):
        label = " ".join(key)
        if key not in now:
            changes.append(Change(label, "missing", before[key][1]["verdict"], "not in the current results"))
            continue
        cur = now[key]
        if key not in before:
            changes.append(Change(label, "new", "not in the baseline", cur["verdict"]))
            continue
        old = before[key][1]
        if _source_kind(old) != _source_kind(cur) and not allow_source_change:
            raise HarnessError(
                f"gate: {label} ran {_source_kind(old)} in the baseline ({old['source']}) but {_source_kind(cur)} now "
                f"({cur['source']}) — compare like with like, or pass --allow-source-change")
        was_ok, is_ok = old["outcome"] in WORKING, cur["outcome"] in WORKING
        if was_ok and not is_ok:
            changes.append(Change(label, "regression", old["verdict"], cur["verdict"]))
        elif is_ok and not was_ok:
            changes.append(Change(label, "fixed", old["verdict"], cur["verdict"]))
        elif is_ok and old["outcome"] != cur["outcome"]:
            changes.append(Change(label, "workaround", old["verdict"], cur["verdict"]))
        if old["outputs"] and cur["outputs"] and old["outputs"] != cur["outputs"]:
            changes.append(Change(label, "signature", *_signature_diff(old["outputs"], cur["outputs"])))
        if old["parity_pass"] and cur["parity_pass"] is False:
            changes.append(Change(label, "parity", f"within tolerance (min {old['min_tolerance']:.2g})",
                                  f"out of tolerance (min {cur['min_tolerance']:.2g})"))
    return changes


def table(changes: list[Change], width: int = 48) -> str:
    """A short fixed-width table of the changes, failing ones first."""
    def cut(text: str) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    rows = [("", "change", "cell", "baseline", "now")]
    rows += [("FAIL" if c.fails else "", c.kind, c.cell, cut(c.before), cut(c.after))
             for c in sorted(changes, key=lambda c: (not c.fails, c.cell, c.kind))]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def parse_renames(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``["v6.1=v7.0"]`` -> ``{"v6.1": "v7.0"}``; a malformed pair is a one-line error."""
    renames: dict[str, str] = {}
    for pair in pairs or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            example = "v6.1=v7.0" if what == "ref" else "py311-torch2.5=py311-torch2.14"
            raise HarnessError(f"gate: --{what} {pair!r}: expected OLD=NEW, e.g. --{what} {example}")
        renames[old] = new
    return renames
