"""One attempt at a batch of cells that share a patched tree: export each format with the ref's own script, run
in this process (so torch and the ref's modules import once, not once per step), then verify it against eager
PyTorch.

Progress goes to a JSON-lines file, one event per line, flushed as it happens: ``stage`` before each step and
``cell`` with the finished measurements. If this process dies (segfault, OOM kill, timeout), the harness keeps
every finished cell, blames the stage in flight on the cell in flight, and starts a fresh worker for the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import sys
import time
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the wire types: the harness's side reads them too; an env's Python never imports them
    from harness.worker.protocol import AttemptAnswer, AttemptJob, CellSpec, Verification


def first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class Progress:
    def __init__(self, path):
        self.fh = open(path, "a")  # noqa: SIM115 -- open for the whole attempt; each event is appended as it happens
        self.stage = None

    def emit(self, **event):
        if event.get("event") == "stage":
            self.stage = event["stage"]
        self.fh.write(json.dumps(event) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


@contextlib.contextmanager
def captured(log_path):
    """Send fds 1 and 2 (Python's and C's output alike) to ``log_path`` while the ref's script runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_script(argv, cwd, log_path):
    """Run a script as ``__main__`` with ``argv``, in ``cwd``; return its exit code (exceptions logged, not raised:
    a script that dies is a result, like one that prints "export failure" and exits 0)."""
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = list(argv)
    os.chdir(cwd)
    code = 0
    try:
        with captured(log_path):
            try:
                runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return code


def describe(arrays, names=None):
    return [{"name": names[i] if names else None, "shape": list(a.shape), "dtype": str(a.dtype)}
            for i, a in enumerate(arrays)]


def onnx_facts(path):
    """Opset actually written, producer, and the graph's declared I/O (symbolic dims stay strings)."""
    import onnx

    model = onnx.load(path, load_external_data=False)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    return {"opset": opset[0] if opset else None, "ir_version": model.ir_version,
            "producer": f"{model.producer_name} {model.producer_version}",
            "inputs": [{"name": v.name, "shape": dims(v)} for v in model.graph.input],
            "outputs": [{"name": v.name, "shape": dims(v)} for v in model.graph.output],
            "external_data": external, "max_rank": max_rank(model)}


def max_rank(model):
    """The highest rank of any tensor in the graph, by ONNX shape inference (None when inference fails)."""
    import onnx

    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # an exporter's custom op or a malformed graph: the fact is unknown, not an error
        return None
    values = [*graph.input, *graph.value_info, *graph.output]
    ranks = [len(v.type.tensor_type.shape.dim) for v in values if v.type.HasField("tensor_type")]
    return max(ranks) if ranks else None


class Reference:
    """Eager PyTorch outputs, computed once per (input case, dynamic mode) and shared by every format."""

    def __init__(self, tree, weights):
        from harness.worker import runners

        self.tree = tree
        self.runners = {dyn: runners.EagerRunner(tree, weights, dynamic=dyn) for dyn in (False, True)}
        self.loaded = {}
        self.outputs = {}
        self.head_inputs = {}  # Detect's inputs in each run: the decode check feeds them to the unpatched Detect
        self.decoded = {}  # (dynamic, key) -> the unpatched Detect's (decoded, raw) for them

    def runner(self, dynamic):
        if dynamic not in self.loaded:
            self.loaded[dynamic] = self.runners[dynamic].load()
        return self.loaded[dynamic]

    def head(self, dynamic):
        return self.runner(dynamic).model.model[-1]  # YOLOv5's Model ends with its Detect (or Segment) layer

    def model_decode(self, dynamic, key):
        """What the ref's own, unpatched Detect.forward decodes from this run's Detect inputs (worker/decode.py), once
        per input: the formats of a batch share it."""
        from harness.worker import decode

        if (dynamic, key) not in self.decoded:
            self.decoded[(dynamic, key)] = decode.own_decode(self.tree, self.head(dynamic),
                                                              self.head_inputs[(dynamic, key)])
        return self.decoded[(dynamic, key)]

    def infer(self, dynamic, key, batch):
        if (dynamic, key) not in self.outputs:
            captured = []
            hook = self.head(dynamic).register_forward_pre_hook(
                lambda module, args: captured.append([t.clone() for t in args[0]]))  # forward edits the list in place
            try:
                self.outputs[(dynamic, key)] = self.runner(dynamic).infer(batch)
            finally:
                hook.remove()
            self.head_inputs[(dynamic, key)] = captured[0] if captured else None
        return self.outputs[(dynamic, key)]


def verify(cell: CellSpec, reference: Reference, progress: Progress, job: AttemptJob) -> Verification:
    """Load the artifact in its backend and compare it with eager PyTorch on the letterboxed photo(s)."""
    from harness.worker import compare, inputs, runners

    fmt, imgsz = cell["format"], int(job["imgsz"])
    dynamic = fmt == "onnx-dynamic"
    timings: dict[str, float] = {}
    result: Verification = {"timings": timings}

    progress.emit(event="stage", cell=cell["id"], stage="load")
    t = time.time()
    eager = reference.runner(dynamic)
    result["detect"] = eager.detect_info()
    if fmt != "torchscript":
        result["onnx"] = onnx_facts(cell["artifact"])
    backend = runners.backend_runner(fmt, cell["artifact"], job.get("threads")).load()
    names = backend.output_names() if hasattr(backend, "output_names") else None
    timings["load"] = time.time() - t

    photo = job.get("image") or inputs.find_photo(job["tree"])
    result["image"] = photo
    max_stride = int(max(result["detect"]["stride"]))
    cases = [("main", imgsz, 1)]
    if dynamic:
        # A second size (half, kept a multiple of the max stride) and a batch of 2 exercise the dynamic axes.
        cases += [("size", max(max_stride, imgsz // 2 // max_stride * max_stride), 1), ("batch", imgsz, 2)]
    result["cases"] = []
    result["decode"] = None
    timings["run"] = timings["compare"] = 0.0
    for name, size, batch in cases:
        progress.emit(event="stage", cell=cell["id"], stage="run")
        t = time.time()
        x = inputs.load_batch(photo, size, batch)
        ref = reference.infer(dynamic, (size, batch), x)
        try:
            got = backend.infer(x)
        except Exception as exc:  # a graph that runs at one input and not another: a finding, keep the others
            result["cases"].append({"name": name, "input_shape": list(x.shape), "eager": describe(ref),
                                    "error": f"{type(exc).__name__}: {first_line(exc)}"})
            continue
        timings["run"] += time.time() - t
        progress.emit(event="stage", cell=cell["id"], stage="compare")
        t = time.time()
        result["cases"].append({
            "name": name, "input_shape": list(x.shape), "eager": describe(ref), "outputs": describe(got, names),
            "parity": compare.compare_outputs(ref, got, float(job["atol"]), float(job["rtol"])),
        })
        timings["compare"] += time.time() - t
        if name == "main":
            t = time.time()
            result["decode"] = check_decode(job, reference, dynamic, (size, batch), got, names)
            timings["decode"] = time.time() - t
    return result


def check_decode(job, reference, dynamic, key, got, names):
    """The post-processing contract (decode.py) on the backend's raw outputs, when it has them; a check that cannot
    run is recorded as such (the judge fails the cell on it) rather than losing the cell's other measurements."""
    from harness.worker import decode

    try:
        return decode.check(job["tree"], reference.head(dynamic), lambda: reference.model_decode(dynamic, key), got,
                            names, key[0], float(job["atol"]), float(job["rtol"]))
    except Exception as exc:
        error = f"{type(exc).__name__}: {first_line(exc)}"
        return {"ok": False, "error": error, "message": f"decode check could not run: {error}",
                "traceback": traceback.format_exc()[-2000:]}


def attempt(job: AttemptJob) -> AttemptAnswer:
    """Run every cell of ``job["cells"]`` in order; each cell's outcome is a ``cell`` event in the progress file."""
    from harness.worker import runners, shims

    runners.use_threads(job.get("threads"))
    progress = Progress(job["progress"])
    tree = job["tree"]
    if tree not in sys.path:
        sys.path.insert(0, tree)
    shims.apply(job.get("shims", []))  # after the tree: a shim may replace a function of the ref's own utils
    reference = Reference(tree, job["weights"])
    exported = {}  # argv -> (workdir, export): v5.0's script writes every format in one call, so run it once
    for cell in job["cells"]:
        progress.emit(event="stage", cell=cell["id"], stage="export")
        key = json.dumps(cell["argv"])
        if key not in exported:
            workdir = cell["workdir"]
            before = set(os.listdir(workdir))
            t = time.time()
            code = run_script(cell["argv"], workdir, os.path.join(workdir, "export.log"))
            exported[key] = workdir, {"exit_code": code, "seconds": time.time() - t, "workdir": workdir,
                                      "produced": sorted(set(os.listdir(workdir)) - before - {"export.log"})}
        workdir, export = exported[key]
        artifact = None
        for name in export["produced"]:
            if name.endswith(tuple(cell["suffixes"])):
                artifact = os.path.join(workdir, name)
                break
        event = {"event": "cell", "cell": cell["id"], "export": export}
        if artifact:
            cell["artifact"] = artifact
            try:
                event["verify"] = verify(cell, reference, progress, job)
            except Exception as exc:
                event["error"] = {"type": type(exc).__name__, "message": first_line(exc), "stage": progress.stage,
                                  "traceback": traceback.format_exc()[-4000:]}
        progress.emit(**event)
    return {"cells": len(job["cells"])}
