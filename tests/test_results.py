"""The result schema: one typed definition, its JSON round trip, tolerant reads, the verdict line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.files import write_json
from harness.results import (
    SCHEMA_VERSION,
    CellResult,
    CompileAttempt,
    CompileSection,
    WorkaroundRecord,
    load_results,
    result_path,
    schema_table,
    verdict_line,
)

DATA = Path(__file__).resolve().parent / "data" / "results"
README = Path(__file__).resolve().parent.parent / "README.md"


def without_nulls(value: object) -> object:
    """JSON with null values and empty defaults of absent keys dropped: older files leave out keys added since."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("path", sorted(DATA.glob("*.json")), ids=lambda p: p.stem)
def test_real_results_round_trip_and_keep_their_verdict(path: Path) -> None:
    data = json.loads(path.read_text())
    result = CellResult.from_json(data)
    assert without_nulls(result.to_json()) == without_nulls(data)
    # These files predate the "(out of the box: ...)" that workaround verdicts now end with.
    assert result.refresh_verdict().startswith(data["verdict"])
    final = data["workaround"] if data["status"] != "pass" and data["workaround"] else data
    assert result.signature() == [(o["name"], o["shape"]) for o in final["outputs"]]
    if result.workaround:
        assert isinstance(result.workaround, WorkaroundRecord)
        assert all(isinstance(p.passed, bool) for p in result.workaround.parity)
        assert "pass" in result.to_json()["workaround"]["parity"][0]  # the JSON key stays "pass"


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    path = result_path(tmp_path, "v7.0__e__1__onnx")
    write_json(path, {"schema": SCHEMA_VERSION, "status": "pass", "cell": "x"})
    assert json.loads(path.read_text())["status"] == "pass"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_corrupt_foreign_and_malformed_files_are_skipped_with_a_warning(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    write_json(result_path(tmp_path, "good"), {"schema": SCHEMA_VERSION, "status": "pass"})
    (tmp_path / "results" / "half.json").write_text('{"schema": 1, "sta')
    (tmp_path / "results" / "other.json").write_text("[1, 2]")
    write_json(result_path(tmp_path, "odd"), {"schema": SCHEMA_VERSION, "status": "maybe"})
    write_json(result_path(tmp_path, "v0"), {"schema": 0, "status": "pass"})
    assert [r.status for r in load_results(tmp_path)] == ["pass"]
    err = capsys.readouterr().err
    assert "half.json" in err and "other.json" in err and "v0.json" in err
    # A value outside the schema names the field it sits in.
    assert re.search(r"odd\.json: not a schema 1 cell result: .*status", err), err


def test_from_json_refuses_what_is_not_a_result() -> None:
    with pytest.raises(HarnessError, match="not a schema 1 cell result"):
        CellResult.from_json({"schema": SCHEMA_VERSION, "status": "pass", "parity": "lots"})


def test_verdicts() -> None:
    assert CellResult(status="pass").refresh_verdict() == "works"
    fixed = CellResult(status="error", cause="x", workaround=WorkaroundRecord(name="A + B", status="pass"))
    assert fixed.refresh_verdict() == "works with workaround A + B (out of the box: x)"
    assert fixed.outcome() == "workaround"
    broken = CellResult(status="error", cause="x", workaround=WorkaroundRecord(name="A", status="error", cause="y"))
    assert broken.refresh_verdict() == "broken: y (with A; out of the box: x)" and broken.outcome() == "error"
    assert CellResult(status="fail").refresh_verdict() == "broken: unclassified"
    assert CellResult(status="skip", message="why").refresh_verdict() == "skipped: why"
    assert verdict_line("error", "x", "", "A", "fail", None) == "broken: unclassified (with A; out of the box: x)"


def test_compile_sections_share_the_verdict_rules_and_read_old_skipped() -> None:
    first = CompileAttempt(status="error", cause="onnxruntime refuses IR 10")
    section = CompileSection(status="pass", workaround={"name": "ir_version=9", "hint": "h"}, out_of_the_box=first)
    assert section.refresh_verdict() == "works with workaround ir_version=9 (out of the box: onnxruntime refuses IR 10)"
    section.status, section.cause = "fail", "bmodel differs from onnxruntime"
    assert section.refresh_verdict() == ("broken: bmodel differs from onnxruntime (with ir_version=9; out of the box: "
                                         "onnxruntime refuses IR 10)")
    data = CellResult(cell="c", compile=CompileSection(status="skip", message="no onnx")).to_json()
    data["compile"]["status"] = "skipped"  # what the compile check wrote before statuses were one Literal
    back = CellResult.from_json(data)
    assert back.compile is not None and back.compile.status == "skip"
    assert "compile" not in CellResult(cell="c").to_json()  # absent: not compiled


def test_readme_documents_every_result_key() -> None:
    """README's "Result schema" table names every key of a cell result and of an attempt, and no other."""
    text = README.read_text()
    section = text[text.index("## Result schema"):]
    section = section[:section.index("\n## ", 3)]
    documented = set(re.findall(r"^\| `([a-z_]+)`", section, re.MULTILINE))
    documented |= {k for row in re.findall(r"^\| ((?:`[a-z_]+`, )+`[a-z_]+`) \|", section, re.MULTILINE)
                   for k in re.findall(r"`([a-z_]+)`", row)}
    assert documented == set(schema_table()["CellResult"])
