"""Result files: atomic writes, tolerant reads, the verdict line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results import SCHEMA_VERSION, load_results, result_path, verdict, write_json


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    path = result_path(tmp_path, "v7.0__e__1__onnx")
    write_json(path, {"schema": SCHEMA_VERSION, "status": "pass", "cell": "x"})
    assert json.loads(path.read_text())["status"] == "pass"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_json(result_path(tmp_path, "good"), {"schema": SCHEMA_VERSION, "status": "pass"})
    (tmp_path / "results" / "half.json").write_text('{"schema": 1, "sta')
    (tmp_path / "results" / "other.json").write_text("[1, 2]")
    assert len(load_results(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "half.json" in err and "other.json" in err


def test_verdicts() -> None:
    assert verdict({"status": "pass"}) == "works"
    wa = {"name": "A + B", "status": "pass"}
    assert verdict({"status": "error", "cause": "x", "workaround": wa}) == "works with workaround A + B"
    broken = {"status": "error", "cause": "x", "workaround": {"name": "A", "status": "error", "cause": "y"}}
    assert verdict(broken) == "broken: y (with A; out of the box: x)"
    assert verdict({"status": "fail", "cause": None, "workaround": None}) == "broken: unclassified"
