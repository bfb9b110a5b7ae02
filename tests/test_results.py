"""The result schema: one typed definition, its JSON round trip, the migration of schema 1 files, tolerant reads, the
verdict as a value."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.files import write_json
from harness.results.model import (
    SCHEMA_VERSION,
    Attempt,
    CellResult,
    CompileAttempt,
    CompileSection,
    load_results,
    result_path,
    schema_markdown,
    schema_table,
)
from harness.results.verdict import Verdict, read_v1_line

TESTS = Path(__file__).resolve().parent
V1_FILES = sorted(TESTS.glob("data*/results/*.json"))  # real schema 1 results, kept as they were written
SCHEMA_DOC = TESTS.parent / "docs" / "schema.md"


def v1_facts(data: dict[str, Any]) -> dict[str, Any]:
    """What a schema 1 file says, read the schema 1 way: the top-level attempt, the rerun under "workaround" and the
    reruns before it under "workaround.earlier"."""
    fix = data.get("workaround")
    final = fix if data["status"] != "pass" and fix else data
    ran = [fix.get("earlier") or [], [fix]] if fix else [[], []]
    return {
        "first": (data["status"], data["stage"], data["cause"], data["message"], data["log_tail"]),
        "outputs": [(o["name"], o["shape"], o.get("dtype")) for o in final["outputs"]],
        "parity": [(p["backend"], p["case"], p["pass"], p.get("min_tolerance")) for p in final["parity"]],
        "export": (final.get("export") or {}).get("argv"),
        "reruns": [(a["name"], a["status"], a["stage"], a["cause"], a["message"], a.get("learned_from"))
                   for a in ran[0] + ran[1]],
        "seconds": round(sum(data["timings"].values()) + sum(sum(a.get("timings", {}).values())
                                                                for a in ran[0] + ran[1]), 6),
        "cell": {k: data.get(k) for k in ("cell", "ref", "commit", "source", "env", "pins", "versions", "model",
                                          "variant", "format", "patch_diff", "inputs_key", "created")},
    }


def v2_facts(result: CellResult) -> dict[str, Any]:
    deciding = result.deciding
    first = result.first
    return {
        "first": (first.status, first.stage, first.cause, first.message, first.log_tail),
        "outputs": [(o.name, o.shape, o.dtype) for o in deciding.outputs],
        "parity": [(p.backend, p.case, p.passed, p.min_tolerance) for p in deciding.parity],
        "export": deciding.export.argv if deciding.export else None,
        "reruns": [(a.name, a.status, a.stage, a.cause, a.message, a.learned_from) for a in result.reruns],
        "seconds": round(result.seconds(), 6),
        "cell": {k: getattr(result, k) for k in ("cell", "ref", "commit", "source", "env", "pins", "versions",
                                                   "model", "variant", "format", "patch_diff", "inputs_key",
                                                   "created")},
    }


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_schema_1_results_migrate_on_read_and_lose_nothing(path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["schema"] == 1
    result = CellResult.from_json(data)
    assert result.schema == SCHEMA_VERSION == 2
    assert v2_facts(result) == v1_facts(data)
    # The verdict: the same outcome and the same reading as the schema 1 line (whose errors read "broken", and
    # whose older workaround lines lacked the "(out of the box: ...)" tail).
    old = read_v1_line(_v1_outcome(data), data["verdict"])
    assert result.judgement.outcome == old.outcome
    assert (result.judgement.fix, result.judgement.cause) == (old.fix, old.cause)
    assert result.verdict.startswith(data["verdict"].replace("broken", result.outcome(), 1) if
                                     result.outcome() == "error" else data["verdict"])
    assert result.signature() == [(o[0], o[1]) for o in v1_facts(data)["outputs"]]
    # Schema 2 round trip: written, read back, equal; the derived keys are there for readers.
    written = result.to_json()
    assert CellResult.from_json(json.loads(json.dumps(written))) == result
    assert written["outcome"] == result.outcome() and written["verdict"] == result.verdict
    assert written["judgement"]["outcome"] == result.outcome() and "status" not in written
    assert "pass" in json.dumps(written["attempts"][result.decided]["parity"][:1]) or not result.deciding.parity


def _v1_outcome(data: dict[str, Any]) -> str:
    """The outcome schema 1 code gave a file (its own rules, written out here as the reference)."""
    if data["status"] == "pass":
        return "works"
    if data["status"] == "skip":
        return "skipped"
    fix = data.get("workaround")
    last = fix or data
    if fix and last["status"] == "pass":
        return "workaround"
    return "broken" if last["status"] == "fail" else "error"


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    path = result_path(tmp_path, "v7.0__e__1__onnx")
    write_json(path, CellResult(cell="x", attempts=[Attempt(status="pass")]).to_json())
    assert json.loads(path.read_text())["outcome"] == "works"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_corrupt_foreign_and_malformed_files_are_skipped_with_a_warning(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    good = {"schema": SCHEMA_VERSION, "attempts": [{"status": "pass"}]}
    write_json(result_path(tmp_path, "good"), good)
    (tmp_path / "results" / "half.json").write_text('{"schema": 2, "atte')
    (tmp_path / "results" / "other.json").write_text("[1, 2]")
    write_json(result_path(tmp_path, "odd"), {"schema": SCHEMA_VERSION, "attempts": [{"status": "maybe"}]})
    write_json(result_path(tmp_path, "v0"), {"schema": 0, "status": "pass"})
    write_json(result_path(tmp_path, "v3"), {**good, "schema": 3})
    assert [r.outcome() for r in load_results(tmp_path)] == ["works"]
    err = capsys.readouterr().err
    assert "half.json" in err and "other.json" in err and "v0.json" in err and "v3.json" in err
    # A value outside the schema names the field it sits in.
    assert re.search(r"odd\.json: not a schema 2 cell result: .*status", err), err


def test_from_json_refuses_what_is_not_a_result() -> None:
    with pytest.raises(HarnessError, match="not a schema 2 cell result"):
        CellResult.from_json({"schema": SCHEMA_VERSION, "attempts": [{"status": "pass", "parity": "lots"}]})
    with pytest.raises(HarnessError, match=r"not a schema 2 \(or 1\) cell result"):
        CellResult.from_json({"schema": SCHEMA_VERSION, "attempts": []})
    with pytest.raises(HarnessError, match="decided 1 is not the index of one of its 1 attempts"):
        CellResult.from_json({"schema": SCHEMA_VERSION, "attempts": [{"status": "error"}], "decided": 1})


def cell(*attempts: Attempt, decided: int | None = None) -> CellResult:
    return CellResult(attempts=list(attempts), decided=len(attempts) - 1 if decided is None else decided)


def test_verdicts_are_values_with_one_line_each() -> None:
    works = cell(Attempt(status="pass"))
    assert (works.judgement, works.verdict, works.outcome()) == (Verdict("works"), "works", "works")
    fixed = cell(Attempt(status="error", cause="x"), Attempt(name="A", status="fail", cause="z"),
                 Attempt(name="A + B", status="pass"))
    assert fixed.judgement == Verdict("workaround", fix="A + B", first_cause="x")
    assert fixed.verdict == "works with workaround A + B (out of the box: x)" and fixed.outcome() == "workaround"
    assert [a.name for a in fixed.reruns] == ["A", "A + B"] and fixed.deciding.name == "A + B"
    # An error stays an error in its words: the line names the outcome the summary counts.
    errs = cell(Attempt(status="error", cause="x"), Attempt(name="A", status="error", cause="y"))
    assert errs.verdict == "error: y (with A; out of the box: x)" and errs.outcome() == "error"
    broken = cell(Attempt(status="error", cause="x"), Attempt(name="A", status="fail"))
    assert broken.verdict == "broken: unclassified (with A; out of the box: x)" and broken.outcome() == "broken"
    assert cell(Attempt(status="fail")).verdict == "broken: unclassified"
    assert cell(Attempt(status="error", stage="checkpoint", cause="c")).verdict == "error: c"
    skipped = cell(Attempt(status="skip", message="why"))
    assert (skipped.verdict, skipped.judgement.reason, skipped.outcome()) == ("skipped: why", "why", "skipped")
    # The reading leaves out the out-of-the-box cause: what a comparison of two cells looks at.
    assert [r.judgement.reading() for r in (works, fixed, errs, broken, skipped)] == [
        "works", "works with workaround A + B", "error: y", "broken: unclassified", "skipped"]
    # Every outcome's line starts with its own word: what the progress line, summary, legend and JSON share.
    for result in (works, fixed, errs, broken, skipped):
        assert result.verdict.split(" ")[0].rstrip(":") in (result.outcome(), "works")


def test_a_chain_that_ran_before_decides_again_in_its_place() -> None:
    result = cell(Attempt(status="error", cause="x"))
    result.record(Attempt(name="A", status="error", cause="y"))
    result.record(Attempt(name="A + B", status="error", cause="z"))
    result.record(Attempt(name="A", status="error", cause="y", not_tried=[]))
    assert [a.name for a in result.attempts] == ["", "A", "A + B"] and result.deciding.name == "A"
    assert result.verdict == "error: y (with A; out of the box: x)"
    assert CellResult.from_json(result.to_json()).decided == 1


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


def test_schema_reference_is_generated_from_the_types() -> None:
    """docs/schema.md carries the key reference schema_markdown() generates, and every key a result writes is in it
    (regenerate: python -c "from harness.results.model import schema_markdown; print(schema_markdown())")."""
    assert schema_markdown() in SCHEMA_DOC.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)`", SCHEMA_DOC.read_text().split("### CellResult")[1].split("###")[0],
                                re.MULTILINE))
    written = CellResult(attempts=[Attempt(status="pass")], compile=CompileSection()).to_json()
    assert documented == set(written) == set(schema_table()["CellResult"])
    assert set(schema_table()["Attempt"]) == set(written["attempts"][0])
