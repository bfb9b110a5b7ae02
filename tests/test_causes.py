"""The cause table (harness/verify/causes.py) on real failures: the harness runs real exports in real envs and the tests
read the causes and second verdicts it wrote. The table's own consistency is checked without torch.

- quick env (torch 2.14, the one CI builds anyway): weights_only at torch.load, then the dynamo exporter writing
  opset 18 when the script asks for 12, fixed by dynamo=False.
- py38-torch1.8 with numpy 1.24 (the seed guide's torch with a too-new numpy): onnx 1.9 uses np.object, so the
  export fails on a removed numpy alias, and the pin workaround reruns the cell in a sibling env with numpy 1.23.5
  (the default py38-torch1.8 env, shared by pins). Costs a torch 1.8 env: see docs/environments.md for its price.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import deciding_attempt, first_attempt, result_files

from harness.patch.detect import FORMS
from harness.verify import causes
from harness.worker import shims

ROOT = Path(__file__).resolve().parent.parent


def test_every_workaround_is_applicable() -> None:
    names = [c.name for c in causes.CAUSES]
    assert len(names) == len(set(names))
    for fix in causes.WORKAROUNDS.values():
        assert set(fix.shims) <= set(shims.SHIMS), fix.name
        assert fix.env or fix.shims or fix.opset or fix.pins or fix.patch_form, f"{fix.name} changes nothing"
        assert fix.patch_form in (None, *FORMS[1:]), fix.name


def test_a_hint_is_not_mistaken_for_another_cause() -> None:
    # Hints are prepended to the out-of-the-box message, which later rounds read again.
    for cause in causes.CAUSES:
        found = causes.classify(cause.hint)
        assert found is None or found is cause, (cause.name, found and found.name)


def run_cells(tmp_path: Path, mirror: Path, env: str, ref: str, variants: str, fmt: str,
              config: Path = ROOT / "matrix.toml", folder: str = "reports") -> dict[str, dict]:
    """Run the harness on real cells; their results by variant."""
    reports = tmp_path / folder
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--config", str(config), "--env", env, "--refs", ref,
         "--variants", variants, "--formats", fmt, "--repo", str(mirror), "--reports", str(reports), "--force",
         "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["variant"]: r for r in result_files(reports)}


def run_harness(tmp_path: Path, mirror: Path, env: str, ref: str, variant: str, fmt: str,
                config: Path = ROOT / "matrix.toml") -> dict:
    return run_cells(tmp_path, mirror, env, ref, variant, fmt, config)[variant]


@pytest.mark.torch
@pytest.mark.slow
def test_torch_2_14_weights_only_then_dynamo_opset(tmp_path: Path, mirror_repo: Path, env_python: Path,
                                                   quick_env: str, fresh_search: Path) -> None:
    found = run_cells(tmp_path, mirror_repo, quick_env, "v7.0", "native,1", "onnx")
    result = found["native"]  # the first batch: it searches step by step
    out = first_attempt(result)
    assert out["status"] == "error" and out["cause"] == "torch.load weights_only"
    fix = deciding_attempt(result)
    # The first rerun exported and ran fine, but the file is opset 18: the dynamo exporter ignored --opset's 12.
    (earlier,) = result["attempts"][1:-1]
    assert earlier["name"] == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"
    assert earlier["cause"] == "ONNX dynamo: opset differs from requested"
    assert re.search(r"ONNX opset (\d+) written, 12 requested", earlier["message"])
    assert fix["name"] == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False" and fix["status"] == "pass"
    assert fix["export"]["opset_written"] == fix["export"]["opset_requested"] == 12
    assert result["verdict"] == ("works with workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False (out of the "
                                 "box: torch.load weights_only)")
    # Variant 1 failed out of the box the same way, before the model ran (torch.load), so native's attempt stands for
    # it; and it tried variant native's chain whole, skipping the middle.
    borrower = found["1"]
    borrowed = deciding_attempt(borrower)
    assert first_attempt(borrower)["cause"] == "torch.load weights_only"
    assert first_attempt(borrower)["shared_from"] == result["cell"]
    assert borrowed["learned_from"] == result["cell"]
    assert borrowed["not_tried"] == ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"]
    assert borrowed["not_tried_met"] == ["ONNX dynamo: opset differs from requested"]  # why dynamo=False follows
    assert len(borrower["attempts"]) == 2  # out of the box, then the borrowed chain: nothing in between
    assert borrowed["export"]["opset_written"] == 12
    assert borrower["verdict"] == result["verdict"]
    # The chain outlives the run (<cache>/learned, per env pins): a later run of the same ref in the same env tries it
    # whole from its first variant on, after that cell's own out-of-the-box attempt, with the same verdict.
    assert [row["names"] for row in json.loads(next(fresh_search.glob("*.json")).read_text())] == [
        ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", "dynamo=False"]]
    again = run_cells(tmp_path, mirror_repo, quick_env, "v7.0", "native", "onnx", folder="again")["native"]
    assert first_attempt(again)["cause"] == "torch.load weights_only" and len(again["attempts"]) == 2
    assert deciding_attempt(again)["learned_from"] == result["cell"]
    assert deciding_attempt(again)["not_tried"] == ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"]
    assert deciding_attempt(again)["not_tried_met"] == ["ONNX dynamo: opset differs from requested"]
    page = tmp_path / "index.html"  # the cell's drill-down says why the chain has its second fix
    done = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(tmp_path / "again"), "--out",
                           str(page), "--junit", str(tmp_path / "junit.xml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("not tried on this cell: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (where it was found, it stopped at: ONNX "
            "dynamo: opset differs from requested)") in page.read_text()
    assert again["verdict"] == result["verdict"]


@pytest.mark.torch
@pytest.mark.slow
def test_a_borrowed_chain_that_meets_the_guide_line_problem_is_extended(
        tmp_path: Path, mirror_repo: Path, env_python: Path, quick_env: str, fresh_search: Path) -> None:
    # v5.0's dynamic ONNX: native works with weights_only off + dynamo=False. Variant 1 borrows that chain whole; with
    # it the guide's edited return is never reached (v5.0's `self.training |= self.export`), a cause with a fix of its
    # own, so the chain grows by the adapted patch form, and then stops at the grid baked in at export size.
    found = run_cells(tmp_path, mirror_repo, quick_env, "v5.0", "native,1", "onnx-dynamic")
    assert found["native"]["verdict"].startswith(
        "works with workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False (out of the box: ")
    fix = deciding_attempt(found["1"])
    [borrowed] = found["1"]["attempts"][1:-1]
    assert borrowed["learned_from"] == found["native"]["cell"]
    assert borrowed["name"] == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False"
    assert borrowed["cause"] == "guide line: edited return never reached", borrowed["message"]
    assert fix["name"] == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False + patch form: export switch off"
    assert fix["patch_form"] == "adapted"
    assert "+        pass  # yolov5-export-matrix: variant=1+adapted" in fix["patch_diff"]
    assert fix["cause"] == "ONNX dynamic: grid fixed at export size", fix["message"]
    assert found["1"]["verdict"].startswith("broken: ONNX dynamic: grid fixed at export size")


@pytest.mark.torch
@pytest.mark.slow
def test_torch_1_8_numpy_alias_is_named_and_pinned_back(tmp_path: Path, mirror_repo: Path) -> None:
    text = (ROOT / "matrix.toml").read_text()
    block = re.search(r'\[envs\."py38-torch1\.8"\].*?\n\]\n', text, re.DOTALL)
    assert block, "matrix.toml has no py38-torch1.8 env"
    config = tmp_path / "matrix.toml"
    # The same env with the first numpy that dropped the aliases.
    config.write_text(text + "\n" + block.group(0).replace('[envs."py38-torch1.8"]', '[envs."py38-numpy1.24"]')
                      .replace('numpy = "1.23.5"', 'numpy = "1.24.4"'))
    result = run_harness(tmp_path, mirror_repo, "py38-numpy1.24", "v5.0", "3", "onnx", config=config)
    assert result["versions"]["numpy"] == "1.24.4" and result["versions"]["onnx"] is None  # import onnx broke
    assert first_attempt(result)["cause"] == "numpy alias removed", first_attempt(result)["message"]
    fix = deciding_attempt(result)
    assert fix["name"] == "numpy==1.23.5" and fix["pins"] == {"numpy": "1.23.5"}
    assert fix["status"] == "pass", fix["message"]
    assert result["verdict"] == "works with workaround numpy==1.23.5 (out of the box: numpy alias removed)"
