"""The tpu-mlir compile check (harness/compile/): config, ONNX selection, env repair, log parsing, causes, and one real
compile end to end.

The end-to-end test builds the tpu-mlir env (~7 GB with torch) and runs tpu-mlir's cmodel simulator: it does not fit
CI's budget, so it carries the `tpu_mlir` marker and runs only when asked for:
`pytest -m tpu_mlir tests/test_compile.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import deciding_attempt

from harness.compile import causes, env
from harness.compile import run as compile_run
from harness.config import load_config
from harness.errors import ConfigError
from harness.files import write_json
from harness.results import model as results

ROOT = Path(__file__).resolve().parent.parent


# -- [compile] in matrix.toml ------------------------------------------------------------------------------------

def _with_compile(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(_drop_table((ROOT / "matrix.toml").read_text(), "targets.tpu-mlir") + "\n[targets.tpu-mlir]\n"
                    + table)
    return path


def _drop_table(text: str, name: str) -> str:
    """The config without its [name] table (so a test can write its own)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip() == f"[{name}]"
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def test_compile_table_defaults_off_with_variants_3_and_native() -> None:
    spec = load_config(ROOT / "matrix.toml").compile
    assert (spec.enabled, spec.variants, spec.quantize, spec.processor) == (False, ("3", "native"), ("F32",), "bm1684x")


def test_compile_table_may_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(_drop_table((ROOT / "matrix.toml").read_text(), "targets.tpu-mlir"))
    assert load_config(path).compile.enabled is False


@pytest.mark.parametrize(("table", "expected"), [
    ("quantise = [\"F32\"]\n", "unknown key 'targets.tpu-mlir.quantise' — did you mean 'quantize'?"),
    ("enabled = \"yes\"\n", "'targets.tpu-mlir.enabled' must be true or false"),
    ("quantize = [\"INT8\"]\n", "unknown quantize 'INT8' in 'targets.tpu-mlir.quantize'"),
    ("processor = \"bm1684xx\"\n", "did you mean 'bm1684x'?"),
    ("variants = [\"5\"]\n", "unknown variant '5' in 'targets.tpu-mlir.variants'"),
    ("formats = [\"onnx-dynamic\"]\n", ("target 'tpu-mlir' does not take onnx-dynamic exports (it takes onnx, "
     "torchscript) — write formats = [\"onnx\", \"torchscript\"] in [targets.tpu-mlir]")),
])
def test_compile_table_errors_name_key_and_fix(tmp_path: Path, table: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_with_compile(tmp_path, table))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_an_old_compile_table_still_loads_and_says_to_rename_it(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "matrix.toml"
    text = _drop_table((ROOT / "matrix.toml").read_text(), "targets.tpu-mlir")
    path.write_text(text + '\n[compile]\nenabled = true\nprocessor = "bm1684x"\n')
    assert load_config(path).compile.enabled is True
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}: [compile] is deprecated: rename it [targets.tpu-mlir] (same keys)"]
    path.write_text(text + "\n[compile]\nenabled = true\n[targets.tpu-mlir]\nenabled = false\n")
    with pytest.raises(ConfigError, match=r"both \[compile\] and \[targets.tpu-mlir\] configure tpu-mlir — keep "):
        load_config(path)


def test_compile_table_values_are_read(tmp_path: Path) -> None:
    spec = load_config(_with_compile(tmp_path, 'enabled = true\nvariants = ["1"]\nquantize = ["F32", "F16"]\n')).compile
    assert (spec.enabled, spec.variants, spec.quantize) == (True, ("1",), ("F32", "F16"))


# -- which ONNX files are compiled ---------------------------------------------------------------------------------

def _result(reports: Path, artifacts: Path, cell: str, variant: str, *, status: str = "pass",
            workaround_status: str | None = None, fmt: str = "onnx", files: tuple[str, ...] = ("model.onnx",)) -> Path:
    label = "out-of-the-box" if status == "pass" else "workaround"
    folder = artifacts / cell / label
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_bytes(b"onnx bytes")
    export = {"files": [{"name": n, "bytes": 10} for n in files], "log": str(folder / "export.log")}
    attempts = [{"status": status, "export": export if status == "pass" else None}]
    if workaround_status:
        attempts.append({"name": "W", "status": workaround_status, "export": export, "image": "/bus.jpg"})
    data = {"schema": results.SCHEMA_VERSION, "cell": cell, "ref": "v7.0", "env": "e", "variant": variant,
            "format": fmt, "attempts": attempts, "decided": len(attempts) - 1, "artifacts_dir": str(artifacts / cell),
            "model": {"imgsz": 640}, "inputs_key": "k"}
    path = results.result_path(reports, cell)
    write_json(path, data)
    return path


def test_find_targets_takes_the_passing_attempt_and_says_why_others_are_skipped(tmp_path: Path) -> None:
    reports, art = tmp_path / "reports", tmp_path / "work"
    _result(reports, art, "a__e__3__onnx", "3")  # passes out of the box
    _result(reports, art, "b__e__3__onnx", "3", status="error", workaround_status="pass",
            files=("model.onnx", "model.onnx.data"))  # passes with a workaround
    _result(reports, art, "c__e__3__onnx", "3", status="error", workaround_status="error")  # broken
    _result(reports, art, "d__e__1__onnx", "1")  # variant not selected
    _result(reports, art, "e__e__3__onnx-dynamic", "3", fmt="onnx-dynamic")  # format not compiled
    gone = _result(reports, art, "f__e__native__onnx", "native")
    (art / "f__e__native__onnx" / "out-of-the-box" / "model.onnx").unlink()
    _result(reports, art, "g__e__3__torchscript", "3", fmt="torchscript",  # the export wrote both: take TorchScript
            files=("model.onnx", "model.torchscript"))
    ready, skipped = compile_run.find_targets(reports, ("3", "native"))
    assert [(t.result.cell, t.attempt, t.artifact.name) for t in ready] == [
        ("a__e__3__onnx", "out-of-the-box", "model.onnx"), ("b__e__3__onnx", "workaround", "model.onnx"),
        ("g__e__3__torchscript", "out-of-the-box", "model.torchscript")]
    assert [t.result.cell for t in compile_run.find_targets(reports, ("3",), ("onnx",))[0]] == [
        "a__e__3__onnx", "b__e__3__onnx"]
    assert ready[1].image == "/bus.jpg"
    why = {r.cell: w for _, r, w in skipped}
    assert set(why) == {"c__e__3__onnx", "f__e__native__onnx"}
    assert "export did not pass" in why["c__e__3__onnx"]
    assert "is gone" in why["f__e__native__onnx"] and gone.exists()


def test_join_keeps_the_result_and_adds_compile(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    path = _result(reports, tmp_path / "work", "a__e__3__onnx", "3")
    section = compile_run.skipped_section(load_config(ROOT / "matrix.toml").compile, "F32", "why")
    f16 = dataclasses.replace(section, quantize="F16")
    compile_run.join(path, [section, f16])
    data = json.loads(path.read_text())
    assert data["cell"] == "a__e__3__onnx" and data["compile"]["status"] == "skip"
    assert data["compile"]["verdict"] == "skipped: why"
    assert [m["quantize"] for m in data["compile"]["more"]] == ["F16"]
    assert not list(path.parent.glob(".*.tmp"))


# -- the env repair ------------------------------------------------------------------------------------------------

def _fake_package(tmp_path: Path, libc: bytes) -> Path:
    third = tmp_path / "tpu_mlir" / "lib" / "third_party"
    third.mkdir(parents=True)
    (third / "libc.so.6").write_bytes(libc)
    for name in ("libm.so.6", "libpthread.so.0", "libz.so.1"):
        (third / name).write_bytes(b"\x7fELF")
    return tmp_path / "tpu_mlir"


def test_glibc_fix_moves_an_older_bundled_glibc(tmp_path: Path) -> None:
    system = env.system_glibc()
    if system is None:
        pytest.skip("not a glibc system")
    older = b"GNU C Library (Ubuntu GLIBC 2.1-0) stable release version 2.1.\n"
    package = _fake_package(tmp_path, older)
    lines: list[str] = []
    record = env.fix_bundled_glibc(package, log=lines.append)
    assert record["moved"] == ["libc.so.6", "libm.so.6", "libpthread.so.0"]
    assert record["bundled"] == "2.1" and record["system"] == f"{system[0]}.{system[1]}"
    assert sorted(p.name for p in (package / "lib" / "third_party").iterdir()) == ["libz.so.1"]
    assert (package / "lib" / env.MOVED_DIR / "libc.so.6").read_bytes() == older
    assert lines and "GLIBC_" in lines[0]  # the log says what was done and why
    assert env.fix_bundled_glibc(package)["moved"] == []  # idempotent


def test_glibc_fix_keeps_a_bundled_glibc_that_is_not_older(tmp_path: Path) -> None:
    libc = Path(os.confstr("CS_GNU_LIBC_VERSION") and "/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.is_file() or env.glibc_version_of(libc) != env.system_glibc():
        pytest.skip("no system libc.so.6 to read")
    package = _fake_package(tmp_path, libc.read_bytes())  # the system's own glibc: the same version
    record = env.fix_bundled_glibc(package, log=lambda _: None)
    assert record["moved"] == [] and "kept" in record["note"]
    assert (package / "lib" / "third_party" / "libc.so.6").exists()


# -- reading tpu-mlir's logs ---------------------------------------------------------------------------------------

# As model_deploy prints them (tpu-mlir 1.30.2), progress bars redrawn with carriage returns included.
DEPLOY_LOG = """[Running]: npz_tool.py compare m_bm1684x_f32_tpu_outputs.npz m_top_outputs.npz --tolerance 0.99,0.99 --except - -vv
  0%|          | 0/3 [00:00<?, ?it/s]\rcompare output0_Transpose:   0%|          | 0/3\r[output0_Transpose               ]        CLOSE [PASSED]
3 compared
3 passed
0 failed
min_similarity = (1.0, 1.0, inf)
Target    m_bm1684x_f32_tpu_outputs.npz
Reference m_top_outputs.npz
npz compare PASSED.
[Running]: npz_tool.py compare m_bm1684x_f32_model_outputs.npz m_bm1684x_f32_tpu_outputs.npz --tolerance 0.99,0.90 --except - -vv
3 compared
2 passed
1 failed
min_similarity = (0.5, 0.25, 3.5)
npz compare FAILED.
"""


def test_tpu_mlir_checks_are_read_from_the_log() -> None:
    checks = compile_run.tpu_mlir_checks(DEPLOY_LOG)
    assert [(c["target"], c["tolerance"], c["compared"], c["failed"], c["verdict"]) for c in checks] == [
        ("m_bm1684x_f32_tpu_outputs.npz", "0.99,0.99", 3, 0, "PASSED"),
        ("m_bm1684x_f32_model_outputs.npz", "0.99,0.90", 3, 1, "FAILED")]
    assert checks[0]["min_sqnr"] == "inf" and checks[1]["min_euclidean"] == 0.25
    json.dumps(checks, allow_nan=False)  # valid JSON: no Infinity


def test_log_tail_keeps_the_last_frame_of_each_progress_line() -> None:
    tail = compile_run.log_tail("a\n" + "\r".join(f"{i}%" for i in range(100)) + "\nlast\n", lines=2)
    assert tail == "99%\nlast"


def test_torchscript_is_given_to_model_transform_under_its_own_name_then_as_pt(tmp_path: Path) -> None:
    """Out of the box tpu-mlir gets the file export.py wrote (v5.0/v6.0: model.torchscript.pt, taken as written;
    v6.1+: model.torchscript, refused); the workaround of Sophgo's guide adds .pt."""
    reports, art = tmp_path / "reports", tmp_path / "work"
    _result(reports, art, "a__e__3__torchscript", "3", fmt="torchscript", files=("model.torchscript",))
    _result(reports, art, "b__e__3__torchscript", "3", fmt="torchscript", files=("model.torchscript.pt",))
    _result(reports, art, "c__e__3__onnx", "3")
    new, old, onnx = compile_run.find_targets(reports, ("3",))[0]
    refused = causes.classify("transform", "RuntimeError: unsupport model:model.torchscript", None)
    assert refused is not None and refused.workaround is causes.PT_SUFFIX
    assert [compile_run.model_file_name(t, None) for t in (new, old, onnx)] == [
        "model.torchscript", "model.torchscript.pt", "model.onnx"]
    assert [compile_run.model_file_name(t, refused.workaround) for t in (new, old)] == [
        "model.torchscript.pt", "model.torchscript.pt"]


def test_ir_version_cause_needs_an_ir_10_model() -> None:
    log = "UnboundLocalError: local variable 'session' referenced before assignment"
    cause = causes.classify("transform", log, {"ir_version": 10})
    assert cause is not None and cause.workaround is causes.IR9
    assert causes.classify("transform", log, {"ir_version": 8}) is None
    assert causes.classify("deploy", "npz compare FAILED.", {"ir_version": 8}).name == "tpu-mlir comparison failed"


SIMILARITY_CHECK = """
import json, sys
import numpy as np
from harness.compile.envside import similarity
a = np.array([1.0, 2.0, 3.0])
print(json.dumps([similarity(a, a), similarity(a, a + np.array([0.0, 0.0, 0.5]))]))
"""


@pytest.mark.torch
def test_similarity_uses_tpu_mlir_definitions(env_python: Path) -> None:
    """Run where envside.py runs: an env's Python with numpy (the quick env; the harness's own has no numpy)."""
    done = subprocess.run([str(env_python), "-c", SIMILARITY_CHECK], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    same, off = json.loads(done.stdout)
    assert same == {"cosine": pytest.approx(1.0), "euclidean": pytest.approx(1.0), "max_abs": 0.0}
    # tpu-mlir: euclidean similarity = 1 - |a-b| / |(a+b)/2| = 1 - 0.5 / |(1, 2, 3.25)|
    assert off["euclidean"] == pytest.approx(1 - 0.5 / (1 + 4 + 3.25 ** 2) ** 0.5, rel=1e-6)  # +1e-7 in the norm
    assert off["max_abs"] == 0.5 and 0.99 < off["cosine"] < 1.0


MERGED_CHECK = """
import json, os, sys, tempfile
import numpy as np, torch
from harness.compile.envside import compare

class Head(torch.nn.Module):  # YOLOv5 v6.0's export-mode return: (decoded, [level, level, level])
    def forward(self, x):
        levels = [x[:, :2] * 2, x[:, 2:] + 1, x.mean(1, keepdim=True)]
        return torch.cat([t.flatten(1) for t in levels], 1), levels

d = tempfile.mkdtemp()
x = np.random.default_rng(0).random((1, 4, 8, 8), dtype=np.float32)
torch.jit.trace(Head(), torch.from_numpy(x), strict=False).save(os.path.join(d, "model.pt"))  # as export.py does
decoded, levels = Head()(torch.from_numpy(x))
np.savez(os.path.join(d, "in.npz"), x=x)
# tpu-mlir's outputs as measured on v6.0 native: the decoded tensor, then the list concatenated flat ("81_r_concat")
flat = torch.cat([t.flatten() for t in levels]).numpy()
np.savez(os.path.join(d, "bmodel.npz"), **{"80": decoded.numpy(), "81_r_concat": flat})
answer = compare({"model": os.path.join(d, "model.pt"), "input_npz": os.path.join(d, "in.npz"),
                  "bmodel_npz": os.path.join(d, "bmodel.npz")})
print(json.dumps(answer))
"""


@pytest.mark.torch
def test_a_list_the_torchscript_front_end_merged_is_compared_and_named(env_python: Path) -> None:
    """v6.0's native TorchScript returns (decoded, [3 levels]); tpu-mlir's bmodel has 2 outputs, the list concatenated
    flat. The rows say so (an interface change a deployer must follow), with the merged values still compared."""
    done = subprocess.run([str(env_python), "-c", MERGED_CHECK], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    first, merged = answer["similarity"]
    assert answer["runtime"].startswith("torch ") and answer["extra_bmodel_outputs"] == []
    assert answer["counts"] == [4, 2]  # the module's outputs, the bmodel's
    assert first["output"] == "output0" and first["cosine"] == pytest.approx(1.0) and "error" not in first
    assert merged["output"] == "output1 + output2 + output3" and merged["bmodel_output"] == "81_r_concat"
    assert merged["error"] == "3 outputs concatenated flat into one"
    assert merged["shape"] == [[1, 2, 8, 8], [1, 2, 8, 8], [1, 1, 8, 8]] and merged["max_abs"] == 0.0


def test_cli_if_enabled_does_nothing_when_disabled(tmp_path: Path) -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness", "compile", "--if-enabled", "--reports", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and time.monotonic() - start < 30  # no env built, nothing printed


def test_cli_rejects_an_unknown_quantize_mode(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness", "compile", "--quantize", "INT4", "--reports",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2 and "unknown mode 'INT4'" in done.stderr
    done = subprocess.run([sys.executable, "-m", "harness", "compile", "--formats", "onnx-dynamic", "--reports",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2 and "tpu-mlir does not take 'onnx-dynamic' — use onnx, torchscript" in done.stderr


# -- one real compile ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tpu_mlir_requested(request: pytest.FixtureRequest) -> None:
    # Session scope: pytest sets up wider-scoped fixtures first, so a function-scoped skip would come only after
    # the session fixtures below (mirror, quick env, checkpoint) were built.
    """Skip unless the run selected the marker (`-m tpu_mlir`): the test needs the 7 GB env and minutes of cmodel."""
    if "tpu_mlir" not in (request.config.option.markexpr or ""):
        pytest.skip("the real compile runs with `pytest -m tpu_mlir` (tpu-mlir env ~7 GB, minutes of simulator)")


def export_and_compile(tmp_path: Path, repo: Path, weights: Path, small_matrix, harness_run,
                       fmt: str) -> tuple[Path, Path]:
    """v7.0's variant 3 in ``fmt``, exported by the harness in the quick env (files kept for the compile), then
    `python -m harness compile` on it: the config and the results folder."""
    config = small_matrix(tmp_path / "matrix.toml", repo=repo, refs=["v7.0"], weights=weights, variants=("3",),
                          formats=(fmt,))
    reports = tmp_path / "reports"
    argv, run_env = harness_run(config, reports, "--keep-artifacts", "all")  # the compile reads the files after
    exported = subprocess.run(argv, env=run_env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    assert exported.returncode == 0, exported.stderr[-3000:]
    done = subprocess.run([sys.executable, "-m", "harness", "compile", "--config", str(config), "--reports",
                           str(reports), "--variants", "3", "--formats", fmt],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, reports


@pytest.mark.tpu_mlir
@pytest.mark.slow
@pytest.mark.torch
def test_real_compile_of_a_variant_3_export(tpu_mlir_requested: None, tmp_path: Path, mirror_repo: Path,
                                            small_weights: Path, small_matrix, harness_run) -> None:
    """v7.0 (stand-in) yolov5n at 160, variant 3, exported by the harness in the quick env (torch 2.14), then
    `python -m harness compile`: the F32 bmodel runs in the simulator and matches ONNX Runtime (after the
    ir_version=9 workaround when the export is IR 10). ~8 min on 2 busy cores (setup ~3 min, compile ~5 min)."""
    config, reports = export_and_compile(tmp_path, mirror_repo, small_weights, small_matrix, harness_run, "onnx")
    result = json.loads(next(results.results_dir(reports).glob("v7.0__*__3__onnx.json")).read_text())
    section = result["compile"]
    assert (section["tool"], section["tool_version"], section["processor"], section["quantize"]) == (
        "tpu-mlir", "1.30.2", "bm1684x", "F32")
    assert section["status"] == "pass", section["message"] + "\n" + section["log_tail"]
    # Which exporter wrote the file depends on the export's own verdict (at 160 the dynamo export may miss parity
    # and the cell pass with dynamo=False): both ways are real, and the compile must read each right.
    attempt = deciding_attempt(result)
    ir_version = attempt["export"]["onnx"]["ir_version"]
    assert section["onnx"]["ir_version"] == ir_version
    if ir_version > causes.MAX_IR_VERSION:  # torch's dynamo exporter: tpu-mlir's onnxruntime refuses IR 10
        assert section["out_of_the_box"]["cause"] == "onnx IR version > 9"
        assert section["verdict"] == "works with workaround ir_version=9"
    else:  # the TorchScript-based exporter (IR 7-8) compiles out of the box
        assert section["out_of_the_box"] is None and section["verdict"] == "works"
    assert section["output_names"] == [o["name"] for o in attempt["outputs"]]
    assert len(section["similarity"]) == 3
    for row in section["similarity"]:
        assert row["cosine"] > 0.9999 and row["euclidean"] > 0.999 and row["max_abs"] < 1e-3
    assert [c["verdict"] for c in section["tpu_mlir_checks"]["transform"]] == ["PASSED"]
    assert section["input"]["shape"] == [1, 3, 160, 160] and section["input"]["keep_aspect_ratio"] is True
    assert set(section["timings"]) == {"transform", "deploy", "compare"}
    kept = Path(section["artifacts_dir"])
    assert list(kept.glob("*.bmodel")) and not list(kept.glob("*_ref_outputs.npz"))  # intermediates cleaned
    assert sum(f.stat().st_size for f in kept.rglob("*") if f.is_file()) < 50e6
    # A second run finds the inputs unchanged and keeps the verdict without compiling.
    again = subprocess.run([sys.executable, "-m", "harness", "compile", "--config", str(config), "--reports",
                            str(reports), "--variants", "3"],
                           cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    assert again.returncode == 0 and "unchanged, kept" in again.stderr
    shutil.rmtree(kept.parent.parent, ignore_errors=True)  # <cell>-<hash>: this test's own compile folder


@pytest.mark.tpu_mlir
@pytest.mark.slow
@pytest.mark.torch
def test_real_compile_of_a_torchscript_export_with_the_pt_suffix(tpu_mlir_requested: None, tmp_path: Path,
                                                                 mirror_repo: Path, small_weights: Path,
                                                                 small_matrix, harness_run) -> None:
    """Sophgo's guide, step 2.3: v7.0's export.py writes model.torchscript, which model_transform refuses by its
    suffix; out of the box that is the named cause, and the guide's ".pt" workaround compiles the same bytes, whose
    bmodel matches torch.jit on the same input."""
    _, reports = export_and_compile(tmp_path, mirror_repo, small_weights, small_matrix, harness_run, "torchscript")
    section = json.loads(next(results.results_dir(reports).glob("v7.0__*__3__torchscript.json")).read_text())["compile"]
    assert section["status"] == "pass", section["message"] + "\n" + section["log_tail"]
    first = section["out_of_the_box"]
    assert (first["stage"], first["cause"]) == ("transform", "model file suffix not taken")
    assert "unsupport model:model.torchscript" in first["log_tail"]
    assert section["verdict"] == "works with workaround suffix .pt (out of the box: model file suffix not taken)"
    assert section["argv"]["transform"][section["argv"]["transform"].index("--model_def") + 1] == "model.torchscript.pt"
    assert section["onnx"] is None and section["reference"].startswith("torch ")
    assert len(section["similarity"]) == 3
    for row in section["similarity"]:
        assert row["cosine"] > 0.9999 and row["max_abs"] < 1e-3
    shutil.rmtree(Path(section["artifacts_dir"]).parent.parent, ignore_errors=True)
