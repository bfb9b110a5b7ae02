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
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
