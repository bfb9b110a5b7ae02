"""`[model] weights`: the user's own checkpoint, end to end through the CLI in the quick env, on the tests' YOLOv5
repository (`yolov5_source`).

The checkpoints are real: a script this module writes builds the model from a ref's own tree with the env's torch and
saves it the way that ref's train.py leaves best.pt after strip_optimizer (``{'model': model.half(), 'ema': None,
...}``), or as a bare state_dict. yolov5n at 160 (v5.0 has no yolov5n.yaml: yolov5s there), so each export takes
seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Yolov5Source, deciding_attempt, result_files

from harness.paths import cache_dir
from harness.sources.checkout import get_checkout

pytestmark = [pytest.mark.torch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["hard hat", "vest", "person"]  # nc = 3: every output row holds 4 box + 1 objectness + 3 classes
NO = 5 + len(NAMES)

# Runs in the env's Python, from the ref's tree: the ref's own Model class, saved as that ref's train.py saves.
BUILD = r'''
import datetime, json, sys
import torch
tree, cfg, out, form, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
sys.path.insert(0, tree)
from models.yolo import Model
torch.manual_seed(0)
model = Model(cfg, ch=3, nc=len(names)).eval()
model.nc, model.names = len(names), names  # train.py sets both before training
if form == "state_dict":
    torch.save(model.state_dict(), out)
else:  # best.pt after utils.general.strip_optimizer: half-precision model, no EMA, no optimizer
    torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                "optimizer": None, "date": datetime.datetime.now().isoformat()}, out)
head = model.model[-1]
print(json.dumps({"no": int(head.no), "nc": int(head.nc), "nl": int(head.nl)}))
'''

# Reads what the exporter wrote into the ONNX file (v7.0's export.py stores stride and names as metadata).
ONNX_META = r'''
import json, sys
import onnx
print(json.dumps({p.key: p.value for p in onnx.load(sys.argv[1]).metadata_props}))
'''


def build_weights(env_python: Path, source: Yolov5Source, ref: str, cfg: str, form: str, out: Path) -> dict:
    tree = get_checkout(source.repo, ref, cache=cache_dir()).path
    script = out.parent / "build_weights.py"
    script.write_text(BUILD)
    env = {**os.environ, "YOLOV5_CONFIG_DIR": str(out.parent / "config")}  # the ref may want a font dir
    proc = subprocess.run([str(env_python), str(script), str(tree), str(tree / "models" / cfg), str(out), form,
                           json.dumps(NAMES)], cwd=out.parent, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cli(config: Path, reports: Path, source: Yolov5Source, quick_env: str,
            *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config),
                           "--repo", source.repo, "--reports", str(reports), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)


def final(result: dict) -> dict:
    return deciding_attempt(result)


def test_a_trained_style_checkpoint_decides_the_shapes(yolov5_source: Yolov5Source, env_python: Path, make_config,
                                                       quick_env: str, tmp_path: Path) -> None:
    """nc=3 and custom names at v7.0, variant 3: expected and exported shapes carry no = 8 from the checkpoint, not
    the cfg's 85 (matrix.toml says yolov5n, nc = 80), and the exporter wrote the checkpoint's names into the ONNX
    file."""
    weights = tmp_path / "best.pt"
    head = build_weights(env_python, yolov5_source, "v7.0", "yolov5n.yaml", "checkpoint", weights)
    assert (head["no"], head["nc"], head["nl"]) == (NO, 3, 3)
    config = make_config(["v7.0"], weights=weights, small=True)
    proc = run_cli(config, tmp_path / "reports", yolov5_source, quick_env, "--variants", "3",
                   "--formats", "onnx,torchscript", "--keep-artifacts", "all")  # the ONNX file is read below
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is a pickle: only the env's processes load it" in proc.stderr  # the trust warning
    found = {r["format"]: r for r in result_files(tmp_path / "reports")}
    assert set(found) == {"onnx", "torchscript"}
    # yolov5n at 160: strides 8/16/32 -> grids 20, 10, 5; 3 anchors each.
    raw = [[1, 3, 20, 20, NO], [1, 3, 10, 10, NO], [1, 3, 5, 5, NO]]
    for fmt, result in found.items():
        outcome = final(result)
        assert outcome["status"] == "pass", (fmt, result["verdict"], outcome["message"])
        assert result["model"]["weights"] == str(weights)
        assert outcome["detect"]["no"] == NO and outcome["detect"]["nc"] == 3
        assert [o["shape"] for o in outcome["outputs"]] == outcome["expected_outputs"] == raw, fmt
        assert result["timings"]["checkpoint"] == 0.0, "the user's checkpoint is used, none is built"
    onnx_file = next(Path(f["name"]) for f in final(found["onnx"])["export"]["files"] if f["name"].endswith(".onnx"))
    workdir = Path(final(found["onnx"])["export"]["log"]).parent
    reader = tmp_path / "onnx_meta.py"
    reader.write_text(ONNX_META)
    meta = subprocess.run([str(env_python), str(reader), str(workdir / onnx_file)], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    stored = json.loads(meta)
    assert stored["stride"] == "32"
    assert [name for _, name in sorted(eval_names(stored["names"]).items())] == NAMES


def eval_names(text: str) -> dict[int, str]:
    """v7.0's export.py writes ``str(dict)`` (``{0: 'hard hat', ...}``): read it as a literal, never eval."""
    import ast

    value = ast.literal_eval(text)
    assert isinstance(value, dict)
    return value


# What a best.pt saved at v5.0 (yolov5s: Focus, SPP, the anchor_grid buffer) does when v7.0's export.py loads it, in
# torch 2.14. Found by running this test on both sources: a real result, the same verdicts as v7.0's own checkpoints
# (v7.0's attempt_load upgrades the old modules: anchor_grid becomes a list, Upsample gets recompute_scale_factor;
# models.yolo.Model is still there, an alias of DetectionModel).
V5_AT_V7 = {  # the ONNX verdict (TorchScript, tried too: works with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on both)
    "upstream": "works with workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False (out of the box: torch.load "
                "weights_only)",
    "stand-in": "works with workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False (out of the box: torch.load "
                "weights_only)",
}


def test_a_checkpoint_from_another_ref(yolov5_source: Yolov5Source, env_python: Path, make_config, quick_env: str,
                                       tmp_path: Path) -> None:
    """A v5.0 best.pt (nc = 3) exported to ONNX at v7.0: the verdict of V5_AT_V7, shapes from the checkpoint.
    Variant 1 (decoded in the graph) is the one that uses the upgraded anchor_grid."""
    weights = tmp_path / "v5.0-best.pt"
    head = build_weights(env_python, yolov5_source, "v5.0", "yolov5s.yaml", "checkpoint", weights)
    assert head["no"] == NO
    config = make_config(["v7.0"], weights=weights, small=True)
    proc = run_cli(config, tmp_path / "reports", yolov5_source, quick_env, "--variants", "1", "--formats", "onnx")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = result_files(tmp_path / "reports")
    outcome = final(result)
    assert result["verdict"] == V5_AT_V7[yolov5_source.kind], (result["cell"], outcome["message"])
    assert result["commit"] == yolov5_source.tags["v7.0"]
    assert [o["shape"] for o in outcome["outputs"]] == [[1, 1575, NO]]  # yolov5s at 160: 3 * (400 + 100 + 25) rows


def test_a_state_dict_is_refused_before_any_export(yolov5_source: Yolov5Source, env_python: Path, make_config,
                                                   quick_env: str, tmp_path: Path) -> None:
    """torch.save(model.state_dict()): tensors without the model. The harness says so from the pickle's opcodes
    (it never unpickles the file) and stops before any env step: exit 2, one line, nothing written."""
    weights = tmp_path / "weights only.pt"
    build_weights(env_python, yolov5_source, "v7.0", "yolov5n.yaml", "state_dict", weights)
    config = make_config(["v7.0"], weights=weights, small=True)
    reports = tmp_path / "reports"
    proc = run_cli(config, reports, yolov5_source, quick_env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = proc.stderr.strip().splitlines()
    assert line == (f"error: {config}: model.weights {weights} has no YOLOv5 model in it (its pickle names no models.* "
                    f"class: a state_dict?), and the refs' export scripts load a pickled model — save it as "
                    f"train.py does, torch.save({{'model': model}}, path), or remove the key to build one")
    assert not list(reports.rglob("*.json"))
