"""Variant npu, for real, through the Rockchip profile: the 4-D per-level conv outputs NPU vendors export, on upstream
v5.0 (whose forward starts with `self.training |= self.export`) and v7.0, checked like every variant (count, shapes,
parity, the decode contract through the NPU layout) and on Rockchip's simulator."""

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
def test_the_rockchip_profile_exports_decodes_and_runs_on_the_npu_simulator(make_config, yolov5_source,
                                                                           tmp_path: Path) -> None:
    """`run --profile rockchip`: the guide's variant (npu), format (onnx) and target (rknn), whatever the config's
    [matrix] says; the report's table of the guides' lines has Rockchip's row."""
    # yolov5s (v5.0 has no yolov5n.yaml) at 160: exports in seconds
    config = make_config(["v5.0", "v7.0"], variants=("native",), formats=("torchscript",))
    config.write_text(re.sub(r"(?m)^imgsz = .*$", "imgsz = 160", config.read_text(), count=1))
    reports = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--config", str(config),
                           "--repo", yolov5_source.repo, "--reports", str(reports), "--jobs", "1", "--profile",
                           "rockchip"], cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "profile rockchip: Rockchip (RKNN NPUs: RK3588, RK3568, ...): variants npu, formats onnx, target rknn" in \
        done.stderr
    found = {p.stem: json.loads(p.read_text()) for p in (reports / "results").glob("*.json")}
    assert sorted(found) == [f"{ref}__{QUICK_ENV}__npu__onnx" for ref in ("v5.0", "v7.0")]
    for npu in found.values():
        attempt = deciding_attempt(npu)
        assert npu["outcome"] in ("works", "workaround"), npu["verdict"]
        # at 160: strides 8, 16, 32; 3 anchors x 85 channels per level, channels first
        assert [o["shape"] for o in attempt["outputs"]] == [[1, 255, 20, 20], [1, 255, 10, 10], [1, 255, 5, 5]]
        assert attempt["decode"]["ok"], attempt["decode"]["message"]
        assert all("permute (0, 1, 3, 4, 2)" in level["layout"] for level in attempt["decode"]["output_order"])
        assert attempt["export"]["onnx"]["max_rank"] == 4  # the point of the form: nothing above rank 4
        rknn = npu["targets"]["rknn"]
        assert rknn["outcome"] == "works", rknn["verdict"]
        assert [row["shape"] for row in rknn["attempts"][rknn["decided"]]["outputs"]] == \
            [o["shape"] for o in attempt["outputs"]]
    page = tmp_path / "index.html"
    subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(reports), "--out", str(page),
                    "--junit", str(tmp_path / "junit.xml")], cwd=ROOT, check=True, capture_output=True)
    table = page.read_text().split('<table class="guide" data-profile="rockchip">', 1)[1].split("</table>", 1)[0]
    assert table.count("✔ as written") == 2, table


def test_an_unknown_profile_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--reports",
                           str(tmp_path / "reports"), "--profile", "nvidia"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("error: --profile: unknown vendor profile 'nvidia' — use one of "
                                                    "sophgo, rockchip")
    assert not (tmp_path / "reports").exists()  # nothing started
