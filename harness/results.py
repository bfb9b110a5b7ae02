"""Cell results as data: one JSON file per ref x env x variant x format, written atomically, read back tolerantly.

The schema is documented in README.md ("Result schema"); SCHEMA_VERSION changes when a key changes meaning.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("pass", "fail", "error", "skip")
STAGES = ("checkout", "patch", "checkpoint", "export", "load", "run", "compare")


def results_dir(reports: Path) -> Path:
    return reports / "results"


def result_path(reports: Path, cell_id: str) -> Path:
    return results_dir(reports) / f"{cell_id}.json"


def write_json(path: Path, data: Any) -> None:
    """Write next to the target, then rename: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from a CI artifact upload or a web server
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_result(reports: Path, result: dict[str, Any]) -> Path:
    """Write one cell's result atomically; a disk that is full, read-only or gone is one HarnessError line.

    The previous result of the cell, and every other file, stay as they were: the new one is complete or absent.
    """
    from harness.errors import HarnessError

    path = result_path(reports, result["cell"])
    try:
        write_json(path, result)
    except OSError as exc:
        raise HarnessError(f"results: cannot write {path}: {exc.strerror or exc} — free space there or pass "
                           f"--reports a writable directory, then rerun (results already written are kept)") from None
    return path


def read_result(path: Path) -> dict[str, Any] | None:
    """One result, or None (with a warning naming the file) when it is not a readable result."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"warning: skipping {path}: not a readable result ({exc})", file=sys.stderr)
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or "status" not in data:
        print(f"warning: skipping {path}: not a schema {SCHEMA_VERSION} cell result", file=sys.stderr)
        return None
    return data


def load_results(reports: Path) -> list[dict[str, Any]]:
    """Every readable result under ``reports``/results, sorted by cell id."""
    found = [read_result(p) for p in sorted(results_dir(reports).glob("*.json"))]
    return [r for r in found if r is not None]


def verdict(result: dict[str, Any]) -> str:
    """The one-line reading of a cell: works / works with workaround X / broken: cause."""
    if result["status"] == "pass":
        return "works"
    workaround = result.get("workaround")
    if workaround and workaround.get("status") == "pass":
        return f"works with workaround {workaround['name']}"
    if result["status"] == "skip":
        return f"skipped: {result.get('message', '')}"
    cause = result.get("cause") or "unclassified"
    if workaround:
        return f"broken: {workaround.get('cause') or 'unclassified'} (with {workaround['name']}; out of the box: {cause})"
    return f"broken: {cause}"


# --------------------------------------------------------------------------------------------------------------
# Merging: results from several shards or machines, as one set.


def find_results_dirs(root: Path) -> list[Path]:
    """Every ``results`` directory under ``root`` (``root`` itself included), e.g. one per downloaded CI artifact."""
    found = [root] if root.name == "results" and root.is_dir() else []
    found += [p for p in root.rglob("results") if p.is_dir()]
    return sorted(set(found))


def merge_results(roots: list[Path]) -> list[dict[str, Any]]:
    """The results under every ``results`` directory below ``roots``, one per cell, sorted by cell id.

    Shards write disjoint cells; when a cell shows up twice (a rerun, an overlapping artifact) the most recently
    created result wins, and a warning names it, so a stale copy never hides a newer verdict.
    """
    from harness.errors import HarnessError

    folders: dict[Path, None] = {}  # ordered and without repeats, also when roots overlap
    for root in roots:
        if not root.is_dir():
            raise HarnessError(f"{root}: no such directory — pass a reports directory written by `harness run`")
        folders.update(dict.fromkeys(f.resolve() for f in find_results_dirs(root)))
    chosen: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            result = read_result(path)
            if result is None:
                continue
            cell = str(result.get("cell") or path.stem)
            other = chosen.get(cell)
            if other is not None:
                print(f"warning: {cell} appears more than once; keeping the newer result", file=sys.stderr)
                if float(other.get("created") or 0) > float(result.get("created") or 0):
                    continue
            chosen[cell] = result
    return [chosen[c] for c in sorted(chosen)]


# Outcome classes, in the order reports list them: the verdict line reduced to one word.
OUTCOMES = ("works", "workaround", "broken", "error", "skipped")


def final_attempt(result: dict[str, Any]) -> dict[str, Any]:
    """The attempt that decides the verdict: the workaround rerun when the out-of-the-box attempt did not pass."""
    workaround = result.get("workaround")
    return workaround if result.get("status") != "pass" and workaround else result


def outcome(result: dict[str, Any]) -> str:
    """One of OUTCOMES: works, workaround (works with one), broken (ran, wrong outputs or parity), error (a stage
    could not finish), skipped."""
    if result.get("status") == "pass":
        return "works"
    if result.get("status") == "skip":
        return "skipped"
    last = final_attempt(result)
    if last is not result and last.get("status") == "pass":
        return "workaround"
    return "broken" if last.get("status") == "fail" else "error"


def signature(result: dict[str, Any]) -> list[tuple[str | None, list[int]]]:
    """The exported outputs as (name, shape) pairs, from the deciding attempt: what a compiler config names."""
    return [(o.get("name"), list(o.get("shape") or [])) for o in final_attempt(result).get("outputs") or []]
