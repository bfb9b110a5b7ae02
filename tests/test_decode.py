"""The post-processing contract (harness/worker/decode.py), for real: the refs' own export scripts in the quick env,
ONNX Runtime and TorchScript outputs decoded by the reference decoder with the anchors and strides read from the
model's Detect, compared with the decoded tensor the ref's unpatched Detect.forward computes, before and after NMS.

The repository is the real upstream (the bundle in ../shared/upstream) when it is there, else the PyPI stand-ins.
The worker is driven directly (the same job the harness sends it) so every field of the decode record can be read;
one harness run on a tree whose Detect decodes with other anchors than it stores shows the cell-level failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import QUICK_ENV, deciding_attempt, repo_from_tag, result_files

from harness import axes
from harness.config import Tolerances
from harness.envs import proc
from harness.patch.detect import adaptation_of, apply_patch
from harness.paths import cache_dir
from harness.results.model import CellResult
from harness.run import exporters
from harness.run.batch import WEIGHTS_NAME
from harness.run.matrix import probe_env
from harness.sources.checkout import get_checkout, open_repo
from harness.verify.causes import classify
from harness.verify.judge import judge

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT.parent / "shared" / "upstream" / "yolov5.bundle"
TOL = Tolerances(atol=1e-3, rtol=1e-3, min_cosine=0.9999)
FORMATS = ("onnx", "torchscript")
# v5.0 has no yolov5n.yaml (n arrived in v6.0): the smallest P5 model of each ref, at 160 px.
MODELS = {"v5.0": "yolov5s.yaml", "v7.0": "yolov5n.yaml"}


@pytest.fixture(scope="module")
def repo(request: pytest.FixtureRequest) -> str:
    """Upstream YOLOv5 (the offline bundle) when present, else the stand-in mirror."""
    return str(BUNDLE) if BUNDLE.is_file() else str(request.getfixturevalue("mirror_repo"))


def yaml_anchors(tree: Path, cfg: str) -> list[list[list[float]]]:
    """The ``anchors:`` rows of a model yaml, as (level, anchor, [w, h]) pixels (read as text: no yaml here)."""
    path = next(p for p in (tree / "models" / cfg, tree / "models" / "hub" / cfg) if p.is_file())
    block = path.read_text().split("anchors:", 1)[1]
    rows = re.findall(r"^\s*-\s*\[([\d,\s]+)\]", block.split("\n\n", 1)[0], re.MULTILINE)
    values = [[float(v) for v in row.split(",") if v.strip()] for row in rows]
    return [[row[i:i + 2] for i in range(0, len(row), 2)] for row in values]


def env_extra() -> dict[str, str]:
    # The offline font (made by the probe) and torch>=2.6's weights_only relaxed: one attempt per cell here.
    return {"YOLOV5_CONFIG_DIR": str(cache_dir() / "yolov5-config"), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def build_weights(env_python: Path, tree: Path, cfg: str, out: Path) -> Path:
    job = {"task": "checkpoint", "tree": str(tree), "cfg": cfg, "nc": 80, "seed": 0, "weights_out": str(out)}
    answer, ran = proc.run_worker(env_python, job, workdir=out.parent / "checkpoint-job", watch=proc.Watch(900),
                                  env_extra=env_extra())
    assert answer and answer.get("ok") and out.is_file(), ran.tail()
    return out


def export_and_verify(env_python: Path, checkout: Path, ref: str, weights: Path, imgsz: int, variant: str,
                      workdir: Path) -> dict[str, dict[str, Any]]:
    """One worker attempt, as harness/run/matrix.py sends it: patch, the ref's export script per format, verify (with
    the
    decode check). Returns format -> the worker's ``cell`` event; each cell's files stay in ``workdir/<format>``."""
    tree = workdir / "tree"
    # The harness's adapted form where the guide's line cannot export as written (v7.0's variant 3: tuple(x); v5.0's
    # variant 4: the export switch off), as a user following the harness's advice writes it.
    form = "adapted" if adaptation_of((checkout / "models" / "yolo.py").read_text(), variant) else "guide"
    apply_patch(checkout, tree, variant, ref, form)
    shape = exporters.detect_exporter(tree, ref)
    cells = []
    for fmt in FORMATS:
        cell_dir = workdir / fmt
        cell_dir.mkdir(parents=True)
        os.link(weights, cell_dir / WEIGHTS_NAME)
        cells.append({"id": fmt, "variant": variant, "format": fmt, "workdir": str(cell_dir),
                      "argv": exporters.command(shape, tree, WEIGHTS_NAME, imgsz, fmt),
                      "suffixes": list(axes.FORMATS[fmt].suffixes), "opset_requested": None})
    progress = workdir / "progress.jsonl"
    job = {"task": "attempt", "tree": str(tree), "weights": str(weights), "imgsz": imgsz, "atol": TOL.atol,
           "rtol": TOL.rtol, "progress": str(progress), "cells": cells,
           # the workarounds torch 2.14 needs for these refs (harness/verify/causes.py finds them in a real run)
           "shims": ["onnx-dynamo-off", "skip-optimize-for-mobile"]}
    answer, ran = proc.run_worker(env_python, job, workdir=workdir / "job", watch=proc.Watch(1800),
                                  env_extra=env_extra())
    assert answer and answer.get("ok"), ran.tail()
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    found = {e["cell"]: e for e in events if e["event"] == "cell"}
    for fmt, event in found.items():
        assert "verify" in event, (fmt, event.get("error"), (workdir / fmt / "export.log").read_text()[-2000:])
    return found


@pytest.fixture(scope="module")
def exports(repo: str, env_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """v5.0 and v7.0 (they differ in where the grid offset and the pixel anchors live), variants native, 3 and 4,
    ONNX and TorchScript: (ref, variant, format) -> the worker's cell event, plus each ref's checkout and weights."""
    root = tmp_path_factory.mktemp("decode")
    probe_env(env_python, root / "probe", cache_dir() / "yolov5-config")  # the offline Arial.ttf
    found: dict[str, Any] = {"events": {}, "trees": {}, "weights": {}}
    for ref, cfg in MODELS.items():
        checkout = get_checkout(repo, ref, cache=cache_dir()).path
        weights = build_weights(env_python, checkout, cfg, root / ref / "model.pt")
        found["trees"][ref], found["weights"][ref] = checkout, weights
        for variant in ("native", "3", "4"):
            events = export_and_verify(env_python, checkout, ref, weights, 160, variant, root / ref / variant)
            for fmt, event in events.items():
                found["events"][(ref, variant, fmt)] = event
    return found


@pytest.mark.slow
@pytest.mark.parametrize("ref", sorted(MODELS))
def test_decode_check_passes_on_real_exports(exports: dict[str, Any], ref: str) -> None:
    anchors = yaml_anchors(exports["trees"][ref], MODELS[ref])
    for variant in ("3", "4"):
        for fmt in FORMATS:
            answer = exports["events"][(ref, variant, fmt)]["verify"]
            decode = answer["decode"]
            assert decode is not None and decode["ok"], (variant, fmt, decode["message"] if decode else None)
            # the constants a deployer needs, read from the model: the yaml's anchors in pixels, strides 8/16/32
            assert decode["anchors"] == anchors and decode["strides"] == [8.0, 16.0, 32.0]
            assert decode["sigmoid_in_graph"] is False and decode["raw_range"][0] < 0  # logits, not probabilities
            raw_first = 1 if variant == "4" else 0  # variant 4 puts the decoded concat first
            assert [o["output"] for o in decode["output_order"]] == [raw_first, raw_first + 1, raw_first + 2]
            assert [o["shape"][2] for o in decode["output_order"]] == [20, 10, 5]  # 160 / stride
            assert decode["decoded_output"] == (0 if variant == "4" else None)
            nms = decode["nms"]
            # per level, a threshold taken from eager's scores keeps boxes (0.25 would keep none on this checkpoint)
            assert [lv["level"] for lv in nms["levels"]] == [0, 1, 2]
            assert all(lv["kept_eager"] > 0 and lv["score_threshold"] < 0.25 for lv in nms["levels"])
            assert nms["matched_fraction"] >= 0.99 and nms["pass"]
            assert decode["max_abs"] < 1e-2  # pixels
            assert answer["timings"]["decode"] > 0
            j = judge(variant, fmt, answer, TOL)
            assert j.status == "pass" and j.decode == decode and "decode check: " in j.message


@pytest.mark.slow
def test_each_ref_is_recognised_by_its_form(exports: dict[str, Any]) -> None:
    """The per-ref table (decode.FORMS) names how each ref writes its decode: v5.0 multiplies by its anchor_grid
    buffer, v7.0 keeps the -0.5 in the grid."""
    forms = {ref: exports["events"][(ref, "3", "onnx")]["verify"]["decode"]["form"] for ref in MODELS}
    assert forms == {"v5.0": "anchor_grid buffer", "v7.0": "grid offset in the grid"}


@pytest.mark.slow
def test_native_decodes_when_the_ref_returns_raw_outputs(exports: dict[str, Any]) -> None:
    # v5.0's exporter sets Detect.export, so its native export is the raw list; v7.0's is the decoded (cat,) alone.
    for fmt in FORMATS:
        v5 = exports["events"][("v5.0", "native", fmt)]["verify"]["decode"]
        assert v5 is not None and v5["ok"] and v5["decoded_output"] is None
        assert exports["events"][("v7.0", "native", fmt)]["verify"]["decode"] is None


@pytest.mark.slow
def test_p6_has_four_levels(repo: str, env_python: Path, tmp_path: Path) -> None:
    """yolov5s6 (v7.0): four levels, strides up to 64, the four anchor rows of its yaml, ONNX and TorchScript."""
    checkout = get_checkout(repo, "v7.0", cache=cache_dir()).path
    probe_env(env_python, tmp_path / "probe", cache_dir() / "yolov5-config")
    weights = build_weights(env_python, checkout, "yolov5s6.yaml", tmp_path / "model.pt")
    events = export_and_verify(env_python, checkout, "v7.0", weights, 256, "3", tmp_path / "3")
    for fmt in FORMATS:
        decode = events[fmt]["verify"]["decode"]
        assert decode["ok"], (fmt, decode["message"], decode.get("nms"))
        assert decode["strides"] == [8.0, 16.0, 32.0, 64.0]
        assert decode["anchors"] == yaml_anchors(checkout, "yolov5s6.yaml") and len(decode["anchors"]) == 4
        assert [o["shape"][2] for o in decode["output_order"]] == [32, 16, 8, 4]


# A deployer's usual mistakes, applied to the real raw outputs of the v7.0 variant 3 ONNX export: each must fail the
# NMS comparison that the right table passes on the same arrays.
WRONG_TABLES = r"""
import json, os, sys
import numpy as np
args = json.loads(sys.argv[1])
sys.path.insert(0, args["tree"])
from harness.worker import decode, inputs, runners
eager = runners.EagerRunner(args["tree"], args["weights"]).load()
head = eager.model.model[-1]
captured = []
head.register_forward_pre_hook(lambda m, a: captured.append([t.clone() for t in a[0]]))
x = inputs.load_batch(inputs.find_photo(args["tree"]), 160, 1)
eager.infer(x)
outputs = runners.backend_runner("onnx", args["artifact"]).load().infer(x)
strides, anchors = decode.detect_constants(head)
z, _ = decode.own_decode(args["tree"], head, captured[0])
a = np.array(anchors)
typo = a.copy()
typo[0, 0] = [13.0, 10.0]  # the first row of the table, w and h swapped
tables = {
    "right": (strides, anchors, False),
    "w and h swapped": (strides, a[..., ::-1], False),
    "levels reversed": (strides, a[::-1], False),
    "anchors in grid units": (strides, a / np.array(strides).reshape(-1, 1, 1), False),
    "stride 8 everywhere": ([8.0] * len(strides), anchors, False),
    "sigmoid left out": (strides, anchors, True),
    "one anchor of the finest level": (strides, typo, False),
}
rows = [o.shape[1] * o.shape[2] * o.shape[3] for o in outputs]
found = {name: decode.compare_nms(z, decode.reference_decode(outputs, *table), rows) for name, table in tables.items()}
silent = z.copy()
silent[..., 4] = 0  # nothing scores: the comparison keeps no box
found["keeps nothing"] = decode.compare_nms(silent, silent, rows)
found["max eager score"] = float(decode.candidates(z)[1].max())
# The numpy twin of NMS and matching (a target env without torchvision, e.g. OpenVINO's) on the same arrays: the same
# boxes kept and matched, level by level, for the right table and a wrong one.
sys.modules["torchvision"] = None  # import torchvision now raises ImportError
found["numpy twin"] = {name: decode.compare_nms(z, decode.reference_decode(outputs, *tables[name]), rows)
                       for name in ("right", "w and h swapped")}
print(json.dumps(found))
"""


@pytest.mark.slow
def test_wrong_tables_fail_on_real_arrays(exports: dict[str, Any], env_python: Path) -> None:
    event = exports["events"][("v7.0", "3", "onnx")]
    artifact = next(Path(event["export"]["workdir"]).glob("*.onnx"))
    args = {"tree": str(Path(event["export"]["workdir"]).parent / "tree"), "weights": str(exports["weights"]["v7.0"]),
            "artifact": str(artifact)}
    ran = subprocess.run([str(env_python), "-c", WRONG_TABLES, json.dumps(args)], capture_output=True, text=True,
                         timeout=600, env=proc.child_env(env_extra(), pythonpath=str(ROOT)), check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert found["right"]["pass"] and found["right"]["kept_eager"] > 0
    assert all(level["kept_eager"] > 0 for level in found["right"]["levels"])  # every level is compared
    for name in ("w and h swapped", "levels reversed", "anchors in grid units", "stride 8 everywhere",
                 "sigmoid left out", "one anchor of the finest level"):
        assert not found[name]["pass"] and found[name]["matched_fraction"] < 0.99, (name, found[name])
    # a level whose table is right still passes on its own: the failure points at the wrong level
    assert [lv["matched_fraction"] >= 0.99 for lv in found["stride 8 everywhere"]["levels"]] == [True, False, False]
    assert [lv["matched_fraction"] >= 0.99 for lv in found["one anchor of the finest level"]["levels"]] == [
        False, True, True]
    assert found["keeps nothing"]["kept_eager"] == 0 and not found["keeps nothing"]["pass"]
    assert found["max eager score"] < 0.25  # why the threshold comes from eager's scores
    for name, twin in found["numpy twin"].items():  # numpy NMS and matching count what torchvision's count
        assert [(lv["kept_eager"], lv["kept_backend"], lv["matched"]) for lv in twin["levels"]] == [
            (lv["kept_eager"], lv["kept_backend"], lv["matched"]) for lv in found[name]["levels"]], name


# -- one cell, end to end: a Detect whose decode uses other anchors than it stores ---------------------------------


@pytest.fixture(scope="module")
def mismatch_run(repo: str, env_python: Path, config: Any, harness_run: Any,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tree from v7.0 whose _make_grid multiplies by the stored anchors with w and h swapped (what a deployer's
    table with swapped columns does), run by `python -m harness run`: variant 3, TorchScript, yolov5n at 160."""
    base = tmp_path_factory.mktemp("mismatch")
    bare = Path(open_repo(repo, cache=cache_dir()).git_dir)
    test_repo = repo_from_tag(bare, "v7.0", base / "repo")
    yolo = base / "repo" / "models" / "yolo.py"
    text = yolo.read_text()
    edited = text.replace("anchor_grid = (self.anchors[i] * self.stride[i])",
                          "anchor_grid = (self.anchors[i].flip(-1) * self.stride[i])")
    assert edited.count(".flip(-1) * self.stride[i]") == 1
    yolo.write_text(edited)
    test_repo.index.add(["models/yolo.py"])
    test_repo.index.commit("Detect decodes with w and h of its anchors swapped")
    env = config.envs[QUICK_ENV]
    q = json.dumps
    lines = ["[source]", f"repo = {q(str(base / 'repo'))}", 'refs = ["main"]', 'fallback = "error"', "",
             "[model]", 'cfg = "yolov5n.yaml"', "nc = 80", "imgsz = 160", "seed = 0", "",
             "[matrix]", 'variants = ["3"]', 'formats = ["torchscript"]', "", f'[envs."{QUICK_ENV}"]',
             f"python = {q(env.python)}",
             *(f"{pin} = {q(getattr(env, pin))}" for pin in ("torch", "torchvision", "onnx", "onnxruntime", "numpy")),
             f"extra = {q(list(env.extra))}", ""]
    (base / "matrix.toml").write_text("\n".join(lines))
    argv, run_env = harness_run(base / "matrix.toml", base / "reports")
    ran = subprocess.run(argv, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=1800, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    (result,) = result_files(base / "reports")
    return result


def deciding(result: dict[str, Any]) -> dict[str, Any]:
    """The attempt that decides the verdict: the guide's list x aborts v7.0's export.py, the adapted tuple(x)
    exports, and its decode is what is wrong."""
    return deciding_attempt(result)


@pytest.mark.slow
def test_a_decode_mismatch_is_a_cell_failure_with_its_cause(mismatch_run: dict[str, Any]) -> None:
    assert mismatch_run["verdict"].startswith("broken: decode mismatch (with patch form tuple(x);")
    result = deciding(mismatch_run)
    assert result["status"] == "fail" and result["cause"] == "decode mismatch", (result["cause"], result["message"])
    assert all(p["pass"] for p in result["parity"])  # the export is right: the decode constants are not
    assert "the formula or Detect's constants" in result["message"]
    assert classify(result["message"]).name == "decode mismatch"  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_result_carries_the_decode_record(mismatch_run: dict[str, Any]) -> None:
    decode = deciding(mismatch_run)["decode"]
    assert decode["ok"] is False and decode["nms"]["matched_fraction"] < 0.99
    assert decode["anchors"][0] == [[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]


# -- the pieces, in the env's interpreter ----------------------------------------------------------------------------

PIECES = r"""
import json, sys
import numpy as np
from harness.worker import decode
args = json.loads(sys.argv[1])
out = {}
# one level, stride 8, one anchor (10, 13), a 1 x 2 grid, logits 0 -> sigmoid 0.5 everywhere
raw = np.zeros((1, 1, 1, 2, 6))
out["decoded"] = decode.reference_decode([raw], [8.0], [[[10.0, 13.0]]]).tolist()
order, decoded = decode.level_outputs([(1, 1575, 85), (1, 3, 20, 20, 85), (1, 3, 10, 10, 85), (1, 3, 5, 5, 85)],
                                      [8.0, 16.0, 32.0], 3, 85, 160, 1)
out["order"], out["decoded_index"] = order, decoded
out["none"] = decode.level_outputs([(1, 1575, 85)], [8.0, 16.0, 32.0], 3, 85, 160, 1)
out["reversed"] = {variant: decode.reverse_patch(open(path).read(), open(diff).read()) == open(original).read()
                   for variant, (path, diff, original) in args["patched"].items()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_reference_decoder_pieces(repo: str, env_python: Path, tmp_path: Path) -> None:
    """The formula on a hand-computed case, output order by shape, and the unpatched models/yolo.py recovered from a
    real patched tree (every variant, v5.0 and v7.0)."""
    patched = {}
    for ref in MODELS:
        checkout = get_checkout(repo, ref, cache=cache_dir()).path
        for variant in ("1", "3", "4"):
            tree = tmp_path / ref / variant
            apply_patch(checkout, tree, variant, ref)
            patched[f"{ref}/{variant}"] = (str(tree / "models" / "yolo.py"), str(tree / "patch.diff"),
                                           str(checkout / "models" / "yolo.py"))
    ran = subprocess.run([str(env_python), "-c", PIECES, json.dumps({"patched": patched})], capture_output=True,
                         text=True, timeout=300, env=proc.child_env(pythonpath=str(ROOT)), check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    # xy = (0.5*2 - 0.5 + grid) * 8 -> x 4 and 12, y 4; wh = (0.5*2)**2 * anchor; conf 0.5
    assert out["decoded"] == [[[4.0, 4.0, 10.0, 13.0, 0.5, 0.5], [12.0, 4.0, 10.0, 13.0, 0.5, 0.5]]]
    assert out["order"] == [1, 2, 3] and out["decoded_index"] == 0
    assert out["none"] == [None, None]
    assert out["reversed"] and all(out["reversed"].values()), out["reversed"]


@pytest.mark.slow
def test_the_drill_down_shows_the_decode_constants(mismatch_run: dict[str, Any], exports: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """The report's drill-down gives a deployer the constants: per level the output, its stride and pixel anchors,
    the formula, the NMS comparison. (The record comes from the worker while run.py does not copy it yet.)"""
    from html.parser import HTMLParser

    from harness.report import html

    page = html.write(tmp_path / "index.html", [CellResult.from_json(mismatch_run)]).read_text()

    class Cells(HTMLParser):
        """The text of each <td> of the decode table, row by row."""

        def __init__(self) -> None:
            super().__init__()
            self.inside, self.rows = False, []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.inside = self.inside or (tag == "table" and ("class", "decode") in attrs)
            if self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag == "td":
                self.rows[-1].append("")

        def handle_endtag(self, tag: str) -> None:
            self.inside = self.inside and tag != "table"

        def handle_data(self, data: str) -> None:
            if self.inside and self.rows and self.rows[-1]:
                self.rows[-1][-1] += data

    cells = Cells()
    cells.feed(page)
    # level, shape, stride, anchors (the output column also holds the backend's name for it, when it has one)
    table = [[" ".join(c.split()) for c in (row[0], row[2], row[3], row[4])] for row in cells.rows if row]
    assert table == [["0", "1×3×20×20×85", "8", "10×13, 16×30, 33×23"],
                     ["1", "1×3×10×10×85", "16", "30×61, 62×45, 59×119"],
                     ["2", "1×3×5×5×85", "32", "116×90, 156×198, 373×326"]]
    assert "apply the sigmoid to every channel" in page and "(y[..., 2:4] * 2) ** 2 * anchor" in page


# -- the judge, on the answer's shape (no env needed) ---------------------------------------------------------------

MISMATCH = ("decode check: the raw outputs decoded with anchors [[[10, 13], [16, 30], [33, 23]]] px and strides [8] do "
            "not give the model's boxes: level 0 (stride 8): 3 of 149 kept boxes match")


def _answer(parity_ok: bool, decode: dict[str, Any] | None) -> dict[str, Any]:
    shapes = [[1, 3, 20, 20, 85], [1, 3, 10, 10, 85], [1, 3, 5, 5, 85]]
    metrics = {"max_abs": 1e-6 if parity_ok else 0.5, "max_rel": 1e-6, "cosine": 1.0, "min_tolerance": 1e-6,
               "finite": True, "exceeding": 0 if parity_ok else 9}
    return {"detect": {"nl": 3, "na": 3, "no": 85, "nc": 80, "stride": [8.0, 16.0, 32.0]}, "decode": decode,
            "cases": [{"name": "main", "input_shape": [1, 3, 160, 160], "eager": [{"shape": s} for s in shapes],
                       "outputs": [{"name": None, "shape": s} for s in shapes], "parity": [metrics] * 3}]}


def test_a_decode_failure_fails_the_cell_with_its_own_cause() -> None:
    j = judge("3", "torchscript", _answer(True, {"ok": False, "message": MISMATCH}), TOL)
    assert j.status == "fail" and j.message == MISMATCH and j.decode == {"ok": False, "message": MISMATCH}
    assert classify(j.message).name == "decode mismatch"  # type: ignore[union-attr]
    # the hint a rerun reads again is not taken for another cause (nor this one)
    assert classify(classify(j.message).hint) is None  # type: ignore[union-attr]


def test_parity_names_the_cause_when_the_raw_numbers_already_differ() -> None:
    j = judge("3", "onnx", _answer(False, {"ok": False, "message": MISMATCH}), TOL)
    assert j.status == "fail" and MISMATCH in j.message
    assert classify(j.message).name == "parity beyond tolerance"  # type: ignore[union-attr]


def test_no_raw_outputs_no_decode_record() -> None:
    j = judge("3", "onnx", _answer(True, None), TOL)
    assert j.status == "pass" and j.decode is None and "decode check" not in j.message
