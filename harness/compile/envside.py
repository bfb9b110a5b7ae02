"""Runs inside the tpu-mlir env's Python: ``python -m harness.compile.envside JOB.json`` (answer written to
``job["out"]``). Plain Python (3.8-compatible), numpy / onnx / onnxruntime / torch of that env only; of the harness
only the matrix's own TorchScript runner (harness/worker/runners.py), so both read a module's outputs alike.

Tasks:
- ``inspect``: copy the exported file into the compile workdir under the name tpu-mlir is given (it writes files next
  to the model, and the matrix's artifacts are not ours to touch) and find the test photo. An ONNX file is read
  first (declared I/O, IR version, opset, external data) and its IR version optionally rewritten (the
  ``ir_version=9`` workaround); a TorchScript module declares no shapes, so its input is the cell's image size.
- ``compare``: the compiled file's own runtime (ONNX Runtime, or torch.jit for a ``.pt``/``.torchscript`` file) on
  the exact input tpu-mlir fed the bmodel (its ``*_in_f32.npz``) against the bmodel's outputs from the cmodel
  simulator: cosine and euclidean similarity as tpu-mlir defines them, and max abs diff.
"""

import json
import os
import shutil
import sys
import traceback


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def inspect(job):
    if job.get("format") == "torchscript":
        shutil.copyfile(job["src"], job["dest"])
        return {"inputs": [{"name": "images", "shape": [1, 3, job["imgsz"], job["imgsz"]]}], "outputs": [],
                "image": _photo(job)}
    import onnx

    src = job["src"]
    model = onnx.load(src, load_external_data=False)
    external = sorted({entry.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                       for entry in t.external_data if entry.key == "location"})
    info = {
        "ir_version": model.ir_version,
        "opset": max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0]),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": i.name, "shape": _dims(i)} for i in model.graph.input
                   if i.name not in {t.name for t in model.graph.initializer}],
        "outputs": [{"name": o.name, "shape": _dims(o)} for o in model.graph.output],
        "external_data": external,
    }
    dest = job["dest"]
    rewrite = job.get("ir_version")
    if rewrite is not None and model.ir_version > rewrite:
        full = onnx.load(src)  # with its external data, saved inline: a yolov5 model is far below protobuf's 2 GB
        full.ir_version = rewrite
        onnx.save(full, dest)
        info["rewritten"] = {"ir_version": [model.ir_version, rewrite]}
    else:
        shutil.copyfile(src, dest)
        for name in external:  # the data files travel with the model, under the names the model records
            shutil.copyfile(os.path.join(os.path.dirname(src), name), os.path.join(os.path.dirname(dest), name))
    info["image"] = _photo(job)
    return info


def _photo(job):
    return job["image"] if job.get("image") and os.path.isfile(job["image"]) else _sample_photo()


def _sample_photo():
    """matplotlib's sample photo (tpu-mlir depends on matplotlib), when the result names no photo of the ref."""
    import matplotlib as mpl

    path = os.path.join(os.path.dirname(mpl.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(path):
        raise FileNotFoundError("no test photo: the result names none and matplotlib's grace_hopper.jpg is missing")
    return path


def similarity(ref, got):
    """tpu-mlir's measures (python/numpy_helper/tensor_compare.py): cosine = a.b / (|a| |b|); euclidean similarity
    = 1 - |a - b| / |(a + b) / 2| (with 1e-7 in the denominator); plus the max absolute difference."""
    import numpy as np

    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(got, dtype=np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(np.dot(a, b) / norms) if norms > 0 else (1.0 if not np.any(a - b) else 0.0)
    euclidean = float(1.0 - np.linalg.norm(a - b) / (np.linalg.norm((a + b) / 2.0) + 1e-7))
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    return {"cosine": cosine, "euclidean": euclidean, "max_abs": max_abs}


def _run_onnx(path, feed_npz):
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    for i, node in enumerate(session.get_inputs()):
        key = node.name if node.name in feed_npz.files else feed_npz.files[i]
        feeds[node.name] = feed_npz[key].astype(np.float32)
    return [o.name for o in session.get_outputs()], session.run(None, feeds), "onnxruntime " + onnxruntime.__version__


def _run_torchscript(path, feed_npz):
    import torch

    from harness.worker.runners import TorchScriptRunner  # flattens YOLOv5's (decoded, [levels]) returns in order

    refs = TorchScriptRunner(path).load().infer(feed_npz[feed_npz.files[0]].astype("float32"))
    return [f"output{i}" for i in range(len(refs))], refs, "torch " + torch.__version__


def compare(job):
    """Pair the reference runtime's outputs with the bmodel's by position (the bmodel names them
    ``<graph name>_<op>``)."""
    import numpy as np

    feed_npz = np.load(job["input_npz"])
    run = _run_onnx if job["model"].endswith(".onnx") else _run_torchscript
    names, refs, runtime = run(job["model"], feed_npz)
    got_npz = np.load(job["bmodel_npz"])
    rows = []
    i = j = 0  # the next reference output, the next bmodel output
    while i < len(refs):
        if j >= len(got_npz.files):
            rows.append({"output": names[i], "error": "missing in the bmodel's outputs"})
            i += 1
            continue
        got, ref = got_npz[got_npz.files[j]], refs[i]
        row = {"output": names[i], "bmodel_output": got_npz.files[j], "shape": list(ref.shape),
               "bmodel_shape": list(got.shape)}
        merged = _merged(refs, i, got.size)
        if got.size == ref.size:
            row.update(similarity(ref, got.reshape(ref.shape)))
        elif merged > 1:  # e.g. YOLOv5 v6.0's (decoded, [level, level, level]): the list became one flat output
            part = refs[i:i + merged]
            row.update(similarity(np.concatenate([r.ravel() for r in part]), got.ravel()),
                       output=" + ".join(names[i:i + merged]), shape=[list(r.shape) for r in part],
                       error=f"{merged} outputs concatenated flat into one")
            i += merged - 1
        else:
            row["error"] = "shape mismatch"
        rows.append(row)
        i, j = i + 1, j + 1
    return {"similarity": rows, "runtime": runtime, "extra_bmodel_outputs": got_npz.files[j:],
            "counts": [len(refs), len(got_npz.files)]}


def _merged(refs, start, size):
    """How many reference outputs from ``start`` on hold ``size`` values together (0 when no run of them does):
    tpu-mlir's TorchScript front end turns a returned list of tensors into one flat concatenation."""
    total = 0
    for count, ref in enumerate(refs[start:], 1):
        total += ref.size
        if total == size:
            return count
        if total > size:
            return 0
    return 0


TASKS = {"inspect": inspect, "compare": compare}


def main(argv):
    with open(argv[1]) as fh:
        job = json.load(fh)
    try:
        answer = TASKS[job["task"]](job)
        answer["ok"] = True
    except Exception as exc:  # the answer carries the failure; the supervisor decides what it means
        answer = {"ok": False, "error": type(exc).__name__ + ": " + (str(exc).splitlines() or [""])[0],
                  "traceback": traceback.format_exc()[-3000:]}
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(answer, fh, indent=1)
    os.replace(tmp, job["out"])


if __name__ == "__main__":
    main(sys.argv)
