"""Variant npu, for real: the 4-D per-level conv outputs NPU vendors export, on upstream v5.0 (whose forward starts
with `self.training |= self.export`) and v7.0, checked like every variant (count, shapes, parity, the decode contract
through the NPU layout) and on Rockchip's simulator, beside variant 3 whose 5-D levels many NPUs refuse."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK_ENV, deciding_attempt

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.torch
@pytest.mark.slow
def test_the_npu_form_exports_decodes_and_runs_on_the_npu_simulator(make_config, yolov5_source,
                                                                   tmp_path: Path) -> None:
    # yolov5s (v5.0 has no yolov5n.yaml) at 160: exports in seconds
    config = make_config(["v5.0", "v7.0"], variants=("npu", "3"), formats=("onnx",))
    config.write_text(re.sub(r"(?m)^imgsz = .*$", "imgsz = 160", config.read_text(), count=1))
    reports = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--config", str(config),
                           "--repo", yolov5_source.repo, "--reports", str(reports), "--jobs", "1", "--targets", "rknn"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = {p.stem: json.loads(p.read_text()) for p in (reports / "results").glob("*.json")}
    for ref in ("v5.0", "v7.0"):
        npu, raw = found[f"{ref}__{QUICK_ENV}__npu__onnx"], found[f"{ref}__{QUICK_ENV}__3__onnx"]
        attempt = deciding_attempt(npu)
        assert npu["outcome"] in ("works", "workaround"), npu["verdict"]
        # at 160: strides 8, 16, 32; 3 anchors x 85 channels per level, channels first
        assert [o["shape"] for o in attempt["outputs"]] == [[1, 255, 20, 20], [1, 255, 10, 10], [1, 255, 5, 5]]
        assert attempt["decode"]["ok"], attempt["decode"]["message"]
        assert all("permute (0, 1, 3, 4, 2)" in level["layout"] for level in attempt["decode"]["output_order"])
        # The point of the form: no tensor above rank 4 anywhere in the graph; variant 3's levels are 5-D.
        assert attempt["export"]["onnx"]["max_rank"] == 4
        assert deciding_attempt(raw)["export"]["onnx"]["max_rank"] == 5
        rknn = npu["targets"]["rknn"]
        assert rknn["outcome"] == "works", rknn["verdict"]
        assert [row["shape"] for row in rknn["attempts"][rknn["decided"]]["outputs"]] == \
            [o["shape"] for o in attempt["outputs"]]
