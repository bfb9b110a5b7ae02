"""Downstream targets: [targets.NAME] in the config, `--targets` on the command line, and the real toolkits
(OpenVINO, rknn-toolkit2's simulator, pnnx + ncnn) compiling a real export, running it on the cell's input and
comparing with ONNX Runtime / TorchScript; a toolkit's refusal is a named cause; the gate fails when a target that
took a cell's export no longer does."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK_ENV

from harness.config import load_config
from harness.errors import ConfigError
from harness.paths import cache_dir

ROOT = Path(__file__).resolve().parent.parent


def _config_with(tmp_path: Path, tables: str) -> Path:
    text = re.sub(r"(?ms)^\[targets\.(openvino|rknn|ncnn)\]\n.*?(?=^\[|\Z)", "", (ROOT / "matrix.toml").read_text())
    path = tmp_path / "matrix.toml"
    path.write_text(text + "\n" + tables)
    return path


def test_the_shipped_config_lists_every_target_off() -> None:
    targets = load_config(ROOT / "matrix.toml").targets
    found = {name: (spec.enabled, spec.variants) for name, spec in targets.items()}
    assert found == dict.fromkeys(("openvino", "rknn", "ncnn"), (False, ("3", "native", "npu")))
    assert targets["rknn"].settings == {"platform": "rk3588", "quantize": False}
    assert targets["openvino"].settings == {"device": "CPU", "precision": "f32"}


@pytest.mark.parametrize(("tables", "expected"), [
    ("[targets.openvno]\nenabled = true\n",
     ("unknown target 'openvno' in [targets.openvno] — did you mean 'openvino'? (targets: openvino, rknn, ncnn, "
      "tpu-mlir)")),
    ('[targets.rknn]\nplatform = "rk3599"\n', "'targets.rknn.platform' is 'rk3599', not one of"),
    ('[targets.rknn]\nplatfrom = "rk3588"\n', "unknown key 'targets.rknn.platfrom' — did you mean 'platform'?"),
    ('[targets.ncnn]\nfp16 = "yes"\n', "'targets.ncnn.fp16' must be true or false"),
    ("[targets.openvino]\nmin_cosine = 2\n", "'targets.openvino.min_cosine' must be >= 0 and <= 1, got 2"),
    ('[targets.rknn]\nformats = ["torchscript"]\n',
     'target \'rknn\' does not take torchscript exports (it takes onnx) — write formats = ["onnx"] in [targets.rknn]'),
    ('[targets.ncnn]\nformats = ["onxx"]\n', "unknown format 'onxx' in 'targets.ncnn.formats'"),
])
def test_target_tables_name_the_problem_and_the_fix(tmp_path: Path, tables: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_config_with(tmp_path, tables))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_target_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "targets", "--targets", "openvino,tensorrt",
                           "--reports", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --targets: unknown target 'tensorrt' — use one of openvino, rknn, ncnn, tpu-mlir")


def test_the_artifact_is_found_under_every_name_the_refs_give_it(tmp_path: Path) -> None:
    """v5.0 and v6.0 write model.torchscript.pt, later refs model.torchscript: ncnn takes either."""
    from harness.axes import FORMATS
    from harness.results.model import Attempt, CellResult, ExportFacts
    from harness.targets.check import artifact_of

    for name in ("model.torchscript.pt", "model.torchscript"):
        (tmp_path / name).write_bytes(b"x")
        files = [{"name": "model.onnx"}, {"name": name}]  # v5.0's export.py writes both formats
        result = CellResult(format="torchscript", attempts=[Attempt(status="pass", export=ExportFacts(
            log=str(tmp_path / "export.log"), files=files))])
        assert artifact_of(result, FORMATS["torchscript"].suffixes) == tmp_path / name
        (tmp_path / name).unlink()
        assert artifact_of(result, FORMATS["torchscript"].suffixes) is None  # gone: the stored verdict stays


def test_a_transient_failure_is_not_reused_by_content() -> None:
    """A timeout or a toolkit that never answered may not recur for the same bytes: the content cache skips them;
    a refusal (a named operator) is the file's own and is reused."""
    from harness.results.model import TargetAttempt, TargetResult
    from harness.targets.check import transient

    def section(**attempt: str) -> TargetResult:
        return TargetResult(target="rknn", attempts=[TargetAttempt(status="error", **attempt)])

    assert transient(section(cause="timeout", message="build: timed out after 900 s"))
    assert transient(section(cause="toolkit crashed", message="the target's process did not answer: died"))
    assert not transient(section(cause="operator not supported by the toolkit", message="build: Frobnicate"))
    assert not transient(TargetResult(target="rknn", attempts=[TargetAttempt(status="pass", message="3 match")]))


# -- the real toolkits ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checked(make_config, yolov5_source, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], str]:
    """v7.0's variant 3 (yolov5n at 160) as ONNX and TorchScript in the quick env, then every target: what the
    results say, and the log of a second identical run."""
    config = make_config(["v7.0"], small=True, variants=("3",), formats=("onnx", "torchscript"))
    reports = tmp_path_factory.mktemp("targets") / "reports"
    argv = [sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--config", str(config), "--repo",
            yolov5_source.repo, "--reports", str(reports), "--jobs", "1", "--targets", "openvino,rknn,ncnn",
            "--keep-artifacts", "all"]  # the same-bytes test hashes the files after the run
    # --force: compile for real even where a run before this one checked the same bytes (the content cache).
    first = subprocess.run([*argv, "--force"], cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    found = {p.stem: json.loads(p.read_text()) for p in (reports / "results").glob("*.json")}
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    return reports, found, again.stderr


@pytest.mark.torch
@pytest.mark.slow
def test_each_target_compiles_runs_and_matches_the_reference(checked) -> None:
    _, found, _ = checked
    onnx, torchscript = found[f"v7.0__{QUICK_ENV}__3__onnx"], found[f"v7.0__{QUICK_ENV}__3__torchscript"]
    assert set(onnx["targets"]) == {"openvino", "rknn"} and set(torchscript["targets"]) == {"ncnn"}
    for cell in (onnx, torchscript):
        shapes = [o["shape"] for o in cell["attempts"][cell["decided"]]["outputs"]]
        for name, target in cell["targets"].items():
            assert target["outcome"] == "works", (name, target["verdict"], target["attempts"][0]["log_tail"])
            rows = target["attempts"][target["decided"]]["outputs"]
            assert [r["shape"] for r in rows] == shapes, name  # every output of the cell, in order
            assert all(r["cosine"] >= 0.999 and r["error"] is None for r in rows), (name, rows)
            # The deployer's post-processing on the target's raw levels: decoded with the cell's own constants, NMS,
            # the same boxes as the reference's, level by level.
            decode = target["attempts"][target["decided"]]["decode"]
            assert decode["pass"] and len(decode["levels"]) == 3, (name, decode)
            assert decode["matched"] == decode["kept_eager"] > 0 and decode["max_abs_px"] < 0.1, (name, decode)
            assert 0 < decode["classes_agree"] <= 1  # recorded; near-tied random-init classes flip on rknn's rounding
    assert onnx["targets"]["rknn"]["tool"] == "rknn-toolkit2 2.5.0"
    # Variant 3's levels are 5-D (what many NPUs refuse; variant npu keeps to 4: tests/test_npu.py).
    assert onnx["attempts"][onnx["decided"]]["export"]["onnx"]["max_rank"] == 5
    assert onnx["targets"]["rknn"]["options"] == {"platform": "rk3588", "quantize": False}
    assert torchscript["targets"]["ncnn"]["reference"].startswith("torchscript (torch 2.14")


@pytest.mark.torch
@pytest.mark.slow
def test_a_second_run_keeps_the_checks_and_the_report_shows_them(checked, tmp_path: Path) -> None:
    reports, _, again = checked
    for name in ("openvino", "rknn", "ncnn"):
        assert re.search(rf"\[{name}\] v7\.0__{re.escape(QUICK_ENV)}__3__\w+: unchanged, kept \(works\)", again), again
    page = tmp_path / "index.html"
    done = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(reports), "--out", str(page),
                           "--junit", str(tmp_path / "junit.xml")], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert "Target rknn: rknn-toolkit2 2.5.0" in html and "Target ncnn: pnnx" in html and "T✔" in html
    # The summary: one table per target, the ref's row, the env's column: 1 check, 1 works.
    for name in ("ncnn", "openvino", "rknn"):
        table = html.split(f'<table class="targets" data-target="{name}">', 1)[1].split("</table>", 1)[0]
        assert re.search(r'<th scope="row">v7\.0</th>\s*<td>\s*<span class="o-works">✔ 1/1</span>', table), table


@pytest.mark.torch
@pytest.mark.slow
def test_the_same_bytes_are_checked_once(checked, tmp_path: Path) -> None:
    """Another results folder with the same cells (a copy, its target sections dropped): every check is found by the
    content of the file it compiled, none runs again, and the joined sections are the first run's."""
    _, found, _ = checked
    copy = tmp_path / "reports" / "results"
    copy.mkdir(parents=True)
    for name, data in found.items():
        (copy / f"{name}.json").write_text(json.dumps({**data, "targets": {}}))
    done = subprocess.run([sys.executable, "-m", "harness", "targets", "--reports", str(copy.parent), "--targets",
                           "openvino,rknn,ncnn"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("openvino", "rknn", "ncnn"):
        assert re.search(rf"\[{name}\] v7\.0__{re.escape(QUICK_ENV)}__3__\w+: the same bytes were checked before, "
                         rf"kept \(works\)", done.stderr), done.stderr[-3000:]
    again = {p.stem: json.loads(p.read_text()) for p in copy.glob("*.json")}
    for cell, data in found.items():
        for name, section in data["targets"].items():
            assert again[cell]["targets"][name]["content_key"] == section["content_key"] is not None
            assert again[cell]["targets"][name]["attempts"] == section["attempts"]


@pytest.mark.torch
@pytest.mark.slow
def test_identical_files_in_one_run_are_checked_once_side_by_side(checked, tmp_path: Path) -> None:
    """Two cells of one run whose files are the same bytes (as v5.0's native and variant 3 ONNX are): with --force
    and two checks at a time (the two targets side by side), each target compiles them once and both cells get the
    verdict."""
    _, found, _ = checked
    cell = f"v7.0__{QUICK_ENV}__3__onnx"
    twin = f"v7.0__{QUICK_ENV}__native__onnx"
    copy = tmp_path / "reports" / "results"
    copy.mkdir(parents=True)
    (copy / f"{cell}.json").write_text(json.dumps({**found[cell], "targets": {}}))
    (copy / f"{twin}.json").write_text(json.dumps({**found[cell], "cell": twin, "variant": "native", "targets": {}}))
    done = subprocess.run([sys.executable, "-m", "harness", "targets", "--reports", str(copy.parent), "--targets",
                           "openvino,rknn", "--force", "--jobs", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("openvino", "rknn"):
        assert re.search(rf"\[{name}\] v7\.0__{re.escape(QUICK_ENV)}__native__onnx: the same bytes as "
                         rf"v7\.0__{re.escape(QUICK_ENV)}__3__onnx, checked once \(works\)", done.stderr), done.stderr
    again = {p.stem: json.loads(p.read_text()) for p in copy.glob("*.json")}
    for name in ("openvino", "rknn"):
        first, second = again[cell]["targets"][name], again[twin]["targets"][name]
        assert first["attempts"] == second["attempts"] and first["content_key"] == second["content_key"]
    assert "targets: 4 checks (4 works)" in done.stdout, done.stdout


@pytest.mark.torch
@pytest.mark.slow
def test_a_refusal_is_named_and_fails_the_gate(checked, env_python: Path, tmp_path: Path) -> None:
    """An operator OpenVINO has no conversion rule for (a real refusal of the real toolkit) is a named cause; a cell
    whose target worked in the baseline and fails now fails the gate with that target named."""
    from harness.config import TargetSpec
    from harness.decide import gate
    from harness.envs import proc
    from harness.paths import cache_dir
    from harness.results import model as results
    from harness.targets import env
    from harness.targets.check import judge
    from harness.targets.toolkits import TOOLKITS

    reports, found, _ = checked
    cell = f"v7.0__{QUICK_ENV}__3__onnx"
    python = env.ensure_env(TOOLKITS["openvino"], cache_dir())
    odd = tmp_path / "odd.onnx"
    made = subprocess.run([str(env_python), "-c", (
        "import onnx, onnx.helper as h, sys\n"
        "x = h.make_tensor_value_info('images', onnx.TensorProto.FLOAT, [1, 3, 160, 160])\n"
        "y = h.make_tensor_value_info('out', onnx.TensorProto.FLOAT, [1, 3, 160, 160])\n"
        "g = h.make_graph([h.make_node('Frobnicate', ['images'], ['out'], domain='com.example')], 'g', [x], [y])\n"
        "m = h.make_model(g, opset_imports=[h.make_opsetid('', 12), h.make_opsetid('com.example', 1)])\n"
        "onnx.save(m, sys.argv[1])\n"), str(odd)], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    image = found[cell]["attempts"][found[cell]["decided"]]["image"]
    job = {"task": "check", "target": "openvino", "reference": "onnxruntime", "artifact": str(odd), "image": image,
           "photos": str(Path(image).parent), "imgsz": 160, "workdir": str(tmp_path), "options": {}}
    answer, ran = proc.run_worker(python, job, workdir=tmp_path, watch=proc.Watch(300),
                                  module="harness.targets.envside")
    refused = judge(answer, ran, TargetSpec(name="openvino"))
    assert (refused.status, refused.stage, refused.cause) == ("error", "build",
                                                              "operator not supported by the toolkit"), refused
    assert "Frobnicate" in refused.message + refused.log_tail

    baseline = tmp_path / "baseline.json"
    gate.write_baseline(baseline, results.load_results(reports))
    now = results.read_result(reports / "results" / f"{cell}.json")
    assert now is not None
    now.targets["openvino"].attempts = [refused]
    later = tmp_path / "later"
    results.save_result(later, now)
    done = subprocess.run([sys.executable, "-m", "harness", "gate", "--baseline", str(baseline), "--reports",
                           str(later), "--allow-missing"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "downstream target openvino: works, now error: operator not supported by the toolkit" in done.stdout, \
        done.stdout


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize(("target", "line", "options"), [
    ("rknn", ('platform = "rk3588"\n', 'platform = "rk3588"\nquantize = true\n'),
     {"platform": "rk3588", "quantize": True}),
    ("openvino", ('precision = "f32"', 'precision = "int8"'), {"device": "CPU", "precision": "int8"}),
])
def test_an_int8_build_calibrates_on_the_refs_photos(checked, tmp_path: Path, target: str, line: tuple[str, str],
                                                     options: dict) -> None:
    """rknn's `quantize = true` and OpenVINO's `precision = "int8"` (NNCF) build INT8, calibrated on the photos the
    ref ships (its data/images); the quantized model is compared with ONNX Runtime like the F32 build, and differs
    more."""
    _, found, _ = checked
    cell = f"v7.0__{QUICK_ENV}__3__onnx"
    config = tmp_path / "matrix.toml"
    shipped = (ROOT / "matrix.toml").read_text()
    assert line[0] in shipped
    config.write_text(shipped.replace(*line, 1))
    copy = tmp_path / "reports" / "results"
    copy.mkdir(parents=True)
    (copy / f"{cell}.json").write_text(json.dumps({**found[cell], "targets": {}}))
    done = subprocess.run([sys.executable, "-m", "harness", "targets", "--config", str(config), "--reports",
                           str(copy.parent), "--targets", target, "--force"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)  # --force: built now, not found by its bytes
    assert done.returncode == 0, done.stderr[-3000:]
    int8 = json.loads((copy / f"{cell}.json").read_text())["targets"][target]
    f32 = found[cell]["targets"][target]
    assert int8["options"] == options
    assert int8["outcome"] == "works", (int8["verdict"], int8["attempts"][0]["log_tail"])
    worst = {name: max(o["max_abs"] for o in section["attempts"][section["decided"]]["outputs"])
             for name, section in (("int8", int8), ("f32", f32))}
    assert worst["int8"] > worst["f32"], worst  # the quantized model is another model: not the F32 build again
    if target == "openvino":  # the IR it kept: NNCF's quantize/dequantize nodes around the convolutions
        where = hashlib.sha256(str(copy.resolve()).encode()).hexdigest()[:8]
        kept = cache_dir() / "targets" / target / f"{cell}-{where}" / int8["attempts"][0]["artifact"]
        assert kept.read_text().count('type="FakeQuantize"') > 10
    # Its boxes are held as detections (IoU 0.5), the F32 build's to rounding (0.99): both keep every box.
    decode = {name: section["attempts"][section["decided"]]["decode"] for name, section in (("int8", int8),
                                                                                             ("f32", f32))}
    assert (decode["int8"]["match_iou"], decode["f32"]["match_iou"]) == (0.5, 0.99)
    assert decode["int8"]["pass"] and decode["int8"]["matched"] == decode["int8"]["kept_eager"] > 0, decode["int8"]
