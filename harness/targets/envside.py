"""Runs inside a target's env: ``python -m harness.targets.envside JOB.json`` (answer written to ``job["out"]``).
Plain Python 3.8-compatible code; the target's toolkit, numpy and the reference runtime of that env.

Task ``check``: read the cell's photo letterboxed as the cell's parity check did (harness/worker/inputs.py),
run the reference (ONNX Runtime on the ONNX file, or the TorchScript module), compile the artifact with the target's
toolkit (one runner per toolkit, same interface: ``runner(artifact, x, options, workdir, photos, threads) ->
(outputs, compiled)``, ``photos`` the folder of the cell's photo, which calibrates an INT8 build, ``threads`` the
check's share of the cores),
run the compiled model on the same input and compare every output. Where the cell's outputs hold every level's raw
tensor, the post-processing a deployer runs on them is checked too (``decode_agreement``). The answer says at which
stage it stopped.

Task ``serve`` (harness/worker/serve.py, started by harness/envs/warm.py): import the toolkit once and fork a child
per ``check``. Importing rknn-toolkit2 takes ~3.5 s and torch (ncnn's reference) ~2.5 s, half of a check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import traceback
from typing import TYPE_CHECKING

from harness.worker import serve

if TYPE_CHECKING:  # the wire types (harness/worker/protocol.py); never imported in an env
    from typing import Literal

    from harness.worker.protocol import TargetAnswer, TargetJob


class StageError(Exception):
    """A failure of one stage, with the text the cause table reads."""

    def __init__(self, stage, message, log=""):
        super().__init__(message)
        self.stage, self.log = stage, log


# -- references --------------------------------------------------------------------------------------------------

# The matrix's own runners (harness/worker/runners.py): the reference reads the file as the cell's parity check did.

def onnxruntime_reference(artifact, x, threads):
    import onnxruntime

    from harness.worker.runners import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(artifact, threads).load()
    return runner.output_names(), runner.infer(x), "onnxruntime " + onnxruntime.__version__


def torchscript_reference(artifact, x, threads):
    import torch

    from harness.worker.runners import TorchScriptRunner, use_threads

    use_threads(threads)
    flat = TorchScriptRunner(artifact).load().infer(x)
    return [str(i) for i in range(len(flat))], flat, "torchscript (torch " + torch.__version__ + ")"


REFERENCES = {"onnxruntime": onnxruntime_reference, "torchscript": torchscript_reference}


# -- runners: compile the artifact, run it on x ---------------------------------------------------------------------

def openvino_runner(artifact, x, options, workdir, photos, threads):
    import openvino as ov

    int8 = options.get("precision") == "int8"
    try:
        model = ov.convert_model(artifact)
        if int8:
            model = nncf_int8(model, photos, x.shape[-1])
        core = ov.Core()
        # An INT8 model carries its precision in its graph (FakeQuantize); the rest computes in f32.
        config = {"INFERENCE_PRECISION_HINT": "f32" if int8 else options.get("precision", "f32")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, options.get("device", "CPU"), config)
        ov.save_model(model, os.path.join(workdir, "model.xml"))
    except Exception as exc:
        raise StageError("build", _line(exc), traceback.format_exc()) from None
    try:
        answer = compiled([x])
    except Exception as exc:
        raise StageError("run", _line(exc), traceback.format_exc()) from None
    return [answer[o] for o in compiled.outputs], "model.xml"


def nncf_int8(model, photos, size):
    """OpenVINO's post-training INT8 (NNCF), calibrated on the ref's photos, each letterboxed as the cell's input
    (0-1: the ONNX file takes what the cell's parity check fed it)."""
    import nncf

    from harness.worker.inputs import load_batch

    batches = [load_batch(path, size) for path in calibration_photos(photos)]
    if not batches:
        raise StageError("build", f"no photo to calibrate the INT8 build on in {photos}")
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))


def calibration_photos(folder):
    """The photos the ref ships (its data/images, the cell's own among them), for an INT8 build's calibration."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))


def rknn_runner(artifact, x, options, workdir, photos, threads):
    from rknn.api import RKNN

    rknn = RKNN(verbose=False)
    quantize = bool(options.get("quantize"))
    dataset = None
    if quantize:  # INT8, calibrated on the ref's photos, read and scaled by the toolkit as Rockchip's guide does it
        dataset = os.path.join(workdir, "dataset.txt")
        with open(dataset, "w") as fh:
            fh.write("\n".join(calibration_photos(photos)) + "\n")
    # F32: the input is already x / 255 (as the cell's parity check fed it), no mean/std inside the model. INT8: the
    # toolkit divides by 255 itself (its calibration reads the photos as 0-255), and is fed x * 255.
    scale = 255.0 if quantize else 1.0
    try:
        steps = (("build", lambda: rknn.config(mean_values=[[0, 0, 0]], std_values=[[scale] * 3],
                                                target_platform=options.get("platform", "rk3588"))),
                 ("build", lambda: rknn.load_onnx(model=artifact)),
                 ("build", lambda: rknn.build(do_quantization=quantize, dataset=dataset)),
                 ("build", lambda: rknn.export_rknn(os.path.join(workdir, "model.rknn"))),
                 ("run", rknn.init_runtime))  # no target: the toolkit's x86 simulator
        for stage, step in steps:
            code = step()
            if code != 0:  # the toolkit logs why and returns non-zero
                raise StageError(stage, f"rknn-toolkit2 returned {code} in {stage}")
        outputs = rknn.inference(inputs=[x * scale], data_format=["nchw"])
        if outputs is None:
            raise StageError("run", "rknn-toolkit2 inference returned no outputs")
        return list(outputs), "model.rknn"
    finally:
        rknn.release()


def ncnn_runner(artifact, x, options, workdir, photos, threads):
    import ncnn
    import numpy as np
    import pnnx as pnnx_package

    # The converter binary itself: the env's `pnnx` script imports torch before it execs it (2.8 s of a 5.5 s run).
    pnnx = pnnx_package.EXEC_PATH
    local = os.path.join(workdir, "model.torchscript")
    if not os.path.exists(local):
        os.symlink(artifact, local)  # pnnx writes its files next to the model it reads
    shape = "[" + ",".join(str(d) for d in x.shape) + "]"
    argv = [pnnx, local, "inputshape=" + shape] + (["fp16=1"] if options.get("fp16") else ["fp16=0"])
    done = subprocess.run(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    param, weights = os.path.join(workdir, "model.ncnn.param"), os.path.join(workdir, "model.ncnn.bin")
    if done.returncode != 0 or not os.path.isfile(param):
        raise StageError("build", f"pnnx exited {done.returncode} without model.ncnn.param", done.stdout[-6000:])
    with open(param) as fh:
        text = fh.read()
    try:
        net = ncnn.Net()
        net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = bool(options.get("fp16"))
        if threads:
            net.opt.num_threads = threads
        net.load_param(param)
        net.load_model(weights)
        extractor = net.create_extractor()
        extractor.input("in0", ncnn.Mat(x[0]).clone())
        outputs = [np.array(mat)[None] for mat in _ncnn_outputs(extractor, text)]  # ncnn drops the batch axis
    except StageError:
        raise
    except Exception as exc:
        raise StageError("run", _line(exc), traceback.format_exc()) from None
    return outputs, "model.ncnn.param"


def _ncnn_outputs(extractor, param_text):
    """Extract out0, out1, ... (pnnx's names for the model's outputs); name the layers ncnn cannot run."""
    mats = []
    for index in range(len(set(re.findall(r"\bout\d+\b", param_text)))):
        code, mat = extractor.extract(f"out{index}")
        if code != 0:
            # pnnx keeps what it cannot convert as its own ops (Tensor.slice, F.*, torch.*): ncnn has no such layers
            types = {line.split()[0] for line in param_text.splitlines()[2:] if line.split()}
            leftover = ", ".join(sorted(t for t in types if "." in t)) or "?"
            raise StageError("run", f"ncnn layer {leftover} is not supported: out{index} cannot be computed "
                                    f"(extract returned {code})", param_text[-3000:])
        mats.append(mat)
    return mats


RUNNERS = {"openvino": openvino_runner, "rknn": rknn_runner, "ncnn": ncnn_runner}
# A quantized build is another model: its boxes are "the same detections" as the F32 reference's in the detection
# metrics' sense (IoU >= 0.5, PASCAL VOC's rule), not to rounding (decode.MATCH_IOU, 0.99). Measured: rknn INT8 of
# v7.0 variant 3 at 160 px moves boxes by up to 1.5 px, and the smallest anchors' boxes are 10-30 px wide.
QUANTIZED_MATCH_IOU = 0.5


# -- the decode a deployer writes ----------------------------------------------------------------------------------

def decode_agreement(contract, refs, outputs):
    """Each level's raw output decoded with the cell's own constants (strides, pixel anchors; the formula of
    harness/worker/decode.py) and put through YOLOv5's NMS, on the target's outputs and on the reference's: how many
    kept boxes match, level by level. Numbers within cosine 0.999 can still move boxes across NMS, which is what a
    deployer sees."""
    import numpy as np

    from harness.worker import decode

    na = len(contract["anchors"][0])
    ref_raw, got_raw = [], []
    for index in contract["order"]:
        ref = np.asarray(refs[index])
        no = ref.shape[-1] if ref.ndim == 5 else ref.shape[1] // na
        ref_raw.append(decode.as_level(ref, na, no))
        got_raw.append(decode.as_level(np.asarray(outputs[index], dtype=ref.dtype).reshape(ref.shape), na, no))
    in_graph = bool(contract.get("sigmoid_in_graph"))
    ref_boxes = decode.reference_decode(ref_raw, contract["strides"], contract["anchors"], in_graph)
    got_boxes = decode.reference_decode(got_raw, contract["strides"], contract["anchors"], in_graph)
    # The boxes are judged within the reference's classes. The harness's random-init checkpoint scores every class
    # within ~1e-5 of the others, so a target's fp16-level rounding (rknn's simulator: 2e-3) flips the argmax of most
    # boxes: a class flip among near-ties is recorded (classes_agree), while the class channels themselves are held
    # to min_cosine like every output.
    same_classes = got_boxes.copy()
    same_classes[..., 4:] = ref_boxes[..., 4:]
    match_iou = QUANTIZED_MATCH_IOU if contract.get("quantized") else decode.MATCH_IOU
    record = decode.compare_nms(ref_boxes, same_classes, [r.shape[1] * r.shape[2] * r.shape[3] for r in ref_raw],
                                match_iou)
    record["max_abs_px"] = float(np.abs(got_boxes[..., :4] - ref_boxes[..., :4]).max())
    record["classes_agree"] = float(np.mean(decode.candidates(got_boxes)[2] == decode.candidates(ref_boxes)[2]))
    return record


# -- the comparison ------------------------------------------------------------------------------------------------

def compare(names, refs, outputs):
    import numpy as np

    rows = []
    for i, (name, ref) in enumerate(zip(names, refs)):
        row = {"output": name, "shape": list(ref.shape), "target_shape": [], "cosine": None, "max_abs": None,
               "error": None}
        if i >= len(outputs):
            row["error"] = "missing"
            rows.append(row)
            continue
        got = np.asarray(outputs[i])
        row["target_shape"] = list(got.shape)
        if got.size != ref.size:
            row["error"] = "shape mismatch"
        else:
            a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            row["cosine"] = float(a @ b / norms) if norms > 0 else (1.0 if not np.any(a - b) else 0.0)
            row["max_abs"] = float(np.max(np.abs(a - b))) if a.size else 0.0
        rows.append(row)
    rows.extend({"output": f"extra {j}", "shape": [], "target_shape": list(np.asarray(outputs[j]).shape),
                 "cosine": None, "max_abs": None, "error": "extra output"} for j in range(len(refs), len(outputs)))
    return rows


def check(job: TargetJob) -> TargetAnswer:
    from harness.worker.inputs import load_batch  # numpy: never at import (a warm process forks after its imports)

    timings: dict[str, float] = {}
    answer: TargetAnswer = {}
    start = time.monotonic()
    stage: Literal["build", "reference"] = "build"
    try:  # the toolkit first: what it refuses is the answer even where this env's reference could not read the file
        x = load_batch(job["image"], int(job["imgsz"]))
        threads = job.get("threads")
        outputs, answer["compiled"] = RUNNERS[job["target"]](job["artifact"], x, job.get("options") or {},
                                                             job["workdir"], job["photos"], threads)
        timings["build+run"] = round(time.monotonic() - start, 2)
        stage, start = "reference", time.monotonic()
        names, refs, answer["reference"] = REFERENCES[job["reference"]](job["artifact"], x, threads)
        timings["reference"] = round(time.monotonic() - start, 2)
    except StageError as exc:
        answer.update({"stage": exc.stage, "error": str(exc), "log": exc.log[-6000:], "timings": timings,
                       "versions": versions()})
        return answer
    except Exception as exc:  # a failure of the reference, or a toolkit that raised instead of returning a code
        answer.update({"stage": stage, "error": _line(exc), "log": traceback.format_exc()[-6000:],
                       "timings": timings, "versions": versions()})
        return answer
    rows = compare(names, refs, outputs)
    answer.update({"stage": None, "outputs": rows, "timings": timings, "versions": versions()})
    if job.get("decode") and not any(row["error"] for row in rows):
        start = time.monotonic()
        try:
            answer["decode"] = decode_agreement(job["decode"], refs, outputs)
        except Exception as exc:  # the numbers were compared; a decode that cannot run is its own finding
            answer["decode"] = {"pass": False, "error": _line(exc)}
        timings["decode"] = round(time.monotonic() - start, 2)
    return answer


def versions():
    """What this env imported: the toolkit and the reference runtime."""
    found = {}
    for module in ("openvino", "rknn", "ncnn", "onnxruntime", "onnx", "torch", "numpy"):
        if module in sys.modules:
            found[module] = str(getattr(sys.modules[module], "__version__", "?"))
    return found


def _line(exc):
    return type(exc).__name__ + ": " + ((str(exc).strip().splitlines() or [""])[0])[:500]


def run_job(job):
    """Answer one job into ``job["out"]``: a failure is an answer too."""
    try:
        answer = serve.serve(job, run_job) if job["task"] == "serve" else check(job)
        answer["ok"] = True
    except Exception as exc:  # the answer carries the failure; the supervisor decides what it means
        answer = {"ok": False, "error": _line(exc), "log": traceback.format_exc()[-3000:]}
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(answer, fh, indent=1)
    os.replace(tmp, job["out"])


def main(argv):
    with open(argv[1]) as fh:
        run_job(json.load(fh))


if __name__ == "__main__":
    main(sys.argv)
