"""The regression gate: exit 1 on a real regression (a branch moved to a tree whose native export has another output
signature), a missing cell (unless --allow-missing), a compile regression, a newly needed workaround (unless
--accept-workarounds); 0 on an unchanged rerun; grouped changes on the console; refuses to compare a stand-in with
upstream code."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
from conftest import Yolov5Source

from harness.decide import gate
from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.results import model as results
from harness.results.model import CellResult, CompileSection
from harness.results.verdict import WORKING
from harness.sources.checkout import open_repo

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline written by the CLI from the committed real results."""
    path = tmp_path_factory.mktemp("gate") / "baseline.json"
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(path), "--write-baseline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gate: baseline of 12 cells written to {path}"
    return path


def test_same_results_pass(baseline: Path) -> None:
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(baseline))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no change in 12 cell pair(s) — nothing to edit" in proc.stdout


def test_upgrading_v6_1_to_v6_2_groups_the_changes(baseline: Path) -> None:
    """Read the baseline's v6.1 cells as if they were today's v6.2 ones (what `--ref v6.1=v6.2` is for): the native
    export drops from 4 outputs to 1 (one group for ONNX and TorchScript), and v6.1's variant 1 has no v6.2 result
    in the data: a missing cell fails, unless --allow-missing."""
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(baseline), "--ref", "v6.1=v6.2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == ["FAIL  [1] no result now", "FAIL  [2] output count 4 → 1",
                     "FAIL  [3] ONNX external-data files: model.onnx.data → none"]
    assert "2 cells: ref v6.1 → v6.2 · env py311-torch2.14 · variant native · formats onnx/torchscript" in proc.stdout
    assert ("  [2] tpu-mlir model_transform (ref v6.1 → v6.2 · variant native · format onnx): `--output_names "
            "output,clone,clone_1,clone_2` → `--output_names output`") in proc.stdout
    allowed = harness("gate", "--reports", str(DATA), "--baseline", str(baseline), "--ref", "v6.1=v6.2",
                      "--allow-missing")
    assert allowed.returncode == 1 and "FAIL  [1] no result now" not in allowed.stdout
    assert "note  [3] no result now (failing without --allow-missing)" in allowed.stdout


def test_a_missing_cell_fails_and_allow_missing_passes_it(baseline: Path, tmp_path: Path) -> None:
    """Today's results lack one baseline cell: exit 1 naming it; --allow-missing: exit 0 with a note."""
    reports = tmp_path / "reports" / "results"
    reports.mkdir(parents=True)
    for path in sorted((DATA / "results").glob("*.json")):
        if path.stem != "v7.0__py311-torch2.14__native__torchscript":
            (reports / path.name).write_bytes(path.read_bytes())
    missing = harness("gate", "--reports", str(reports.parent), "--baseline", str(baseline))
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "FAIL  [1] no result now" in missing.stdout
    assert "1 cell: ref v7.0 · env py311-torch2.14 · variant native · format torchscript" in missing.stdout
    allowed = harness("gate", "--reports", str(reports.parent), "--baseline", str(baseline), "--allow-missing")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "0 failing group(s), 1 note(s)" in allowed.stdout


def test_a_compile_regression_fails(tmp_path: Path) -> None:
    """The baseline keeps compile verdicts: a cell whose tpu-mlir compile passed and now fails (IR 10 from the dynamo
    exporter, the cause harness/compile/causes.py names) fails the gate, with that cause's hint as the edit."""
    found = results.merge_results([DATA])
    cell = next(r for r in found if r.cell == "v7.0__py311-torch2.14__native__onnx")
    compiled = dataclasses.replace(cell, compile=CompileSection(status="pass", tool="tpu-mlir", quantize="F32"))
    broken = dataclasses.replace(cell, compile=CompileSection(
        status="fail", stage="transform", cause="onnx IR version > 9", tool="tpu-mlir", quantize="F32",
        message="UnboundLocalError: local variable 'session' referenced before assignment"))
    for name, result in (("before", compiled), ("after", broken)):
        results.save_result(tmp_path / name, result)
    base = tmp_path / "baseline.json"
    assert harness("gate", "--reports", str(tmp_path / "before"), "--baseline", str(base),
                   "--write-baseline").returncode == 0
    assert json.loads(base.read_text())["cells"][cell.cell]["compile_reading"] == "works"
    proc = harness("gate", "--reports", str(tmp_path / "after"), "--baseline", str(base))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  [1] tpu-mlir compile worked, now broken: onnx IR version > 9" in proc.stdout
    assert ("  [1] add to the tpu-mlir step: ir_version=9 — tpu-mlir's onnxruntime 1.16.3 loads ONNX IR <= 9; "
            "torch's dynamo exporter writes IR 10: rewrite the model's IR version field to 9") in proc.stdout
    fixed = harness("gate", "--reports", str(tmp_path / "before"), "--baseline", str(base))
    assert fixed.returncode == 0


def test_a_newly_needed_workaround_fails_unless_accepted(tmp_path: Path) -> None:
    """Real upstream v7.0 results in torch 2.4 (baseline) and 2.14 (today), compared with --env: every cell now needs
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (ONNX also dynamo=False): two groups, one per workaround, whatever else the
    cells need. The deploy script breaks until edited: exit 1 with the edits; --accept-workarounds makes those
    groups notes and the gate passes."""
    upgrade_data = DATA.parent / "data-upgrade" / "results"
    for env in ("py311-torch2.4", "py311-torch2.14"):
        folder = tmp_path / env / "results"
        folder.mkdir(parents=True)
        for path in upgrade_data.glob(f"v7.0__{env}__*.json"):
            (folder / path.name).write_bytes(path.read_bytes())
    base = tmp_path / "baseline.json"
    assert harness("gate", "--reports", str(tmp_path / "py311-torch2.4"), "--baseline", str(base),
                   "--write-baseline").returncode == 0
    args = ["gate", "--reports", str(tmp_path / "py311-torch2.14"), "--baseline", str(base), "--env",
            "py311-torch2.4=py311-torch2.14"]
    proc = harness(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == ["FAIL  [1] newly needs workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
                     "FAIL  [2] newly needs workaround dynamo=False"]
    assert "12 cells: ref v7.0 · env py311-torch2.4 → py311-torch2.14 · every variant · every format" in proc.stdout
    assert "  [1] add to the export's environment: `export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`" in proc.stdout
    accepted = harness(*args, "--accept-workarounds")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "0 failing group(s), 2 note(s)" in accepted.stdout
    assert "(failing without --accept-workarounds)" in accepted.stdout


def test_regressions_and_parity_fail_fixes_pass() -> None:
    found = results.merge_results([DATA])
    good = next(r for r in found if r.cell == "v6.1__py311-torch2.14__native__onnx")
    base = {"schema": gate.BASELINE_SCHEMA, "cells": {good.cell: gate.summarize(good)}}
    broken = CellResult.from_json(good.to_json())
    assert broken.decided
    broken.deciding.status, broken.deciding.parity[0].passed = "fail", False
    broken.deciding.cause = "parity beyond tolerance"
    model = gate.answer(base, [broken], label="gate")
    kinds = [(g["kind"], g["failing"]) for g in model["groups"]]
    assert kinds == [("broken", True), ("parity", True)] and model["exit_code"] == 1
    assert model["groups"][0]["title"] == "worked, now broken: parity beyond tolerance"
    assert model["groups"][0]["cells"][0]["detail"] == (
        "works with workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 → broken: parity beyond tolerance")
    fixed = gate.answer({"schema": 2, "cells": {good.cell: gate.summarize(broken)}}, [good], label="gate")
    assert [(g["kind"], g["failing"]) for g in fixed["groups"]] == [("fixed", False)] and fixed["exit_code"] == 0


def test_a_schema_1_baseline_still_compares() -> None:
    """A baseline written before compile verdicts were kept (schema 1) is read: the same results pass, a changed
    signature fails."""
    found = results.merge_results([DATA])
    old = {r.cell: {"ref": r.ref, "env": r.env, "variant": r.variant, "format": r.format, "commit": r.commit,
                    "source": r.source, "standin": (r.standin or {}).get("distribution"), "outcome": r.outcome(),
                    "verdict": r.verdict, "outputs": [[n, s] for n, s in r.signature()], "parity_pass": True,
                    "min_tolerance": 1e-6} for r in found}
    baseline = {"kind": gate.BASELINE_KIND, "schema": 1, "cells": old}
    assert gate.answer(baseline, found, label="gate")["groups"] == []
    moved = gate.answer(baseline, found, label="gate", refs={"v6.1": "v6.2"}, allow_missing=True)
    assert [g["title"] for g in moved["groups"] if g["failing"]] == ["output count 4 → 1"]


def test_stand_in_versus_upstream_is_refused_unless_allowed() -> None:
    found = results.merge_results([DATA])
    standin = next(r for r in found if r.cell == "v7.0__py311-torch2.14__native__onnx")
    upstream = dataclasses.replace(standin, standin=None, source="https://github.com/ultralytics/yolov5.git")
    base = {"cells": {standin.cell: gate.summarize(standin)}}
    with pytest.raises(HarnessError, match=r"ran a PyPI stand-in in the baseline .* but the upstream repository now"):
        gate.pairs(base, [upstream])
    assert gate.answer(base, [upstream], label="gate", allow_source_change=True)["groups"] == []


def test_bad_baselines_are_one_line_errors(tmp_path: Path) -> None:
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and proc.stderr.strip().endswith("save one first with --write-baseline")
    (tmp_path / "other.json").write_text("[]")
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(tmp_path / "other.json"))
    assert proc.returncode == 2 and "is not a baseline file" in proc.stderr
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(tmp_path / "other.json"), "--ref", "v6.1")
    assert proc.returncode == 2


@pytest.mark.torch
@pytest.mark.slow
def test_gate_on_a_real_upgrade(yolov5_source: Yolov5Source, make_config, quick_env: str, env_python: Path,
                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A deploy branch on v6.1's tree gets a commit with v6.2's tree: the native TorchScript export goes from 4
    outputs to 1, so the gate fails; an unchanged rerun passes. Two real exports of yolov5n at 160, on the tests'
    repository (`yolov5_source`), shipped the air-gapped way: the fork is a git bundle at a path with a space, and the
    upgrade arrives as a new bundle dropped in its place."""
    repo = git.Repo.clone_from(yolov5_source.repo, tmp_path / "fork.git", bare=True)
    repo.git.branch("deploy", "refs/tags/v6.1")
    bundle = tmp_path / "air gapped" / "fork.bundle"
    bundle.parent.mkdir()
    repo.git.bundle("create", str(bundle), "--all")
    config = make_config(["deploy"], small=True)
    base = tmp_path / "baseline.json"
    # torch>=2.6's weights_only default relaxed up front: one attempt per cell (the gate reads either attempt).
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}

    def run(reports: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config),
                               "--repo", str(bundle), "--variants", "native", "--formats", "torchscript",
                               "--reports", str(reports)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900, check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # This session's bundle gets its own clone in the shared cache: removed at the end (the upstream history is 18 MB).
    request.addfinalizer(lambda: shutil.rmtree(open_repo(str(bundle), cache=cache_dir()).git_dir, ignore_errors=True))
    run(tmp_path / "before")
    [before] = results.load_results(tmp_path / "before")
    assert before.outcome() in WORKING and len(before.signature()) == 4, before.verdict
    assert before.commit == yolov5_source.tags["v6.1"]
    # The bundle's code is upstream's (or the stand-in's, on a clone without ../shared): the source says which.
    if yolov5_source.kind == "stand-in":
        assert (before.source or "").startswith("pypi:yolov5==")
        assert before.standin and before.standin["stands_in_for"] == "v6.1"
    else:
        assert before.source == f"bundle:{bundle}" and before.standin is None
    assert harness("gate", "--reports", str(tmp_path / "before"), "--baseline", str(base),
                   "--write-baseline").returncode == 0

    run(tmp_path / "before")  # unchanged inputs: the result is kept, and the gate passes
    same = harness("gate", "--reports", str(tmp_path / "before"), "--baseline", str(base))
    assert same.returncode == 0, same.stdout + same.stderr

    tree = repo.git.rev_parse("refs/tags/v6.2^{tree}")
    # Fixed names and dates: the same commit every session, so its checkout and checkpoint stay cached.
    upgrade = repo.git.commit_tree(tree, "-p", "deploy", "-m", "deploy: move to v6.2",
                                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                                        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
                                        "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"})
    repo.git.update_ref("refs/heads/deploy", upgrade)
    bundle.unlink()
    repo.git.bundle("create", str(bundle), "--all")  # the next delivery replaces the file
    run(tmp_path / "after")
    [after] = results.load_results(tmp_path / "after")
    assert after.commit == upgrade and len(after.signature()) == 1
    changed = harness("gate", "--reports", str(tmp_path / "after"), "--baseline", str(base))
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert [line for line in changed.stdout.splitlines() if line.startswith("FAIL")] == ["FAIL  [1] output count 4 → 1"]
    assert f"1 cell: ref deploy · env {quick_env} · variant native · format torchscript" in changed.stdout
    assert "1 output(s) now: 1x1575x85 (was 4: 1x1575x85, 1x3x20x20x85" in changed.stdout  # yolov5n at 160
