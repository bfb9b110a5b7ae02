"""One runner per backend, one interface (Polygraphy's idea): ``load()`` once, then ``infer(batch) -> [ndarray]``.

Eager PyTorch is the reference. It loads the checkpoint with the ref's own ``attempt_load`` from the *patched* tree,
so it is the very model the ref's exporter traced, and puts Detect in the mode exporters put it in.
"""

import contextlib
import os
import sys
from typing import Any

import numpy as np

# Attributes YOLOv5 exporters set on Detect before tracing (v5.0 models/export.py sets export; v6.x sets inplace and
# onnx_dynamic; v6.2+ sets export; v7.0 renamed onnx_dynamic to dynamic). Only those a module has are set.
EXPORT_MODE_ATTRS = ("export", "inplace", "onnx_dynamic", "dynamic")


@contextlib.contextmanager
def trusted_pickle_load():
    """Let torch>=2.6 unpickle a full checkpoint for the eager reference only, then restore the environment, so the
    ref's exporter (run later in this process) still meets torch's own default."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def flatten(value):
    """Nested tuples/lists of tensors or arrays -> a flat list, in order (ONNX flattens outputs the same way)."""
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            out.extend(flatten(item))
        return out
    return [value]


def to_numpy(values):
    return [v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for v in flatten(values)]


class EagerRunner:
    name = "eager"

    def __init__(self, tree, weights, dynamic=False):
        self.tree, self.weights, self.dynamic = str(tree), str(weights), dynamic
        self.model: Any = None  # the ref's Model, once loaded

    def load(self):
        if self.tree not in sys.path:
            sys.path.insert(0, self.tree)
        from models.experimental import attempt_load  # the ref's own loader

        # Our own checkpoint (or the user's, by their choice): a pickle that torch>=2.6 refuses under weights_only.
        with trusted_pickle_load():
            model = attempt_load(self.weights).float().eval()
        mode = {"export": True, "inplace": False, "onnx_dynamic": self.dynamic, "dynamic": self.dynamic}
        for module in model.modules():
            if type(module).__name__ in ("Detect", "Segment"):
                for attr in EXPORT_MODE_ATTRS:
                    if hasattr(module, attr):
                        setattr(module, attr, mode[attr])
        self.model = model
        return self

    def detect_info(self):
        """Facts expected shapes are derived from: detection layers, anchors, outputs per anchor, strides."""
        head = self.model.model[-1]  # YOLOv5's Model ends with its Detect (or Segment) layer
        return {
            "detect_class": type(head).__name__,
            "nl": int(head.nl),
            "na": int(head.na),
            "no": int(head.no),
            "nc": int(head.nc),
            "stride": [float(s) for s in self.model.stride.tolist()],
        }

    def infer(self, batch):
        import torch

        with torch.no_grad():
            return to_numpy(self.model(torch.from_numpy(batch)))


class TorchScriptRunner:
    name = "torchscript"

    def __init__(self, path):
        self.path = str(path)
        self.module: Any = None

    def load(self):
        import torch

        self.module = torch.jit.load(self.path, map_location="cpu")
        return self

    def infer(self, batch):
        import torch

        with torch.no_grad():
            return to_numpy(self.module(torch.from_numpy(batch)))


def use_threads(threads):
    """Intra-op threads for torch in this job (None: one per core). The supervisor runs jobs side by side and gives
    each its share of the cores, so two jobs do not fight over them (ONNX Runtime: OnnxRuntimeRunner's threads)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def __init__(self, path, threads=None):
        self.path, self.threads = str(path), threads
        self.session: Any = None

    def load(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        return self

    def output_names(self):
        return [o.name for o in self.session.get_outputs()]

    def infer(self, batch):
        feed = {self.session.get_inputs()[0].name: batch}
        return [np.asarray(o) for o in self.session.run(None, feed)]


def backend_runner(fmt, artifact, threads=None):
    """The runner for an export format (onnx and onnx-dynamic both run in ONNX Runtime)."""
    return TorchScriptRunner(artifact) if fmt == "torchscript" else OnnxRuntimeRunner(artifact, threads)
