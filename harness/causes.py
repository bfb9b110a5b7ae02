"""Known reasons a cell breaks, and the safe workaround for those that have one — data, matched against logs.

A row names the cause, the pattern that recognises it in an exporter's log or a worker's error, a one-line hint,
and optionally a workaround: extra environment for the export rerun. Order matters: the first match wins, so put
specific patterns before general ones. Workarounds accumulate: a rerun that breaks for another cause with a
workaround is tried again with both (harness/run.py), so a cell can read "works with A + B". Issue #3 grows this table as more torch/onnx/numpy pins join the matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workaround:
    """Extra environment and/or named in-process shims (harness/worker/shims.py) for the rerun."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    shims: tuple[str, ...] = ()
    hint: str = ""


@dataclass(frozen=True)
class Cause:
    name: str
    pattern: str
    hint: str
    workaround: Workaround | None = None


# torch 2.6 made torch.load(weights_only=True) the default; YOLOv5 checkpoints are pickled nn.Modules, so every
# tag's attempt_load fails. Forcing the old default is safe for a checkpoint the harness built itself.
NO_WEIGHTS_ONLY = Workaround(
    name="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
    env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    hint="restores torch.load's pre-2.6 default; safe only for a checkpoint you trust (the harness's own is)",
)

DYNAMO_OFF = Workaround(
    name="dynamo=False",
    shims=("onnx-dynamo-off",),
    hint="torch.onnx.export(..., dynamo=False): the TorchScript-based exporter the ref was written for",
)

NO_MOBILE_OPTIMIZER = Workaround(
    name="skip optimize_for_mobile",
    shims=("skip-optimize-for-mobile",),
    hint="save the traced module without optimize_for_mobile (remove that call from the ref's export script)",
)

CAUSES: tuple[Cause, ...] = (
    Cause("torch.load weights_only", r"Weights only load failed|WeightsUnpickler error",
          "torch>=2.6 loads with weights_only=True by default and YOLOv5 checkpoints are pickled modules",
          NO_WEIGHTS_ONLY),
    # Found on v5.0 x torch 2.14: models/export.py always runs optimize_for_mobile on the TorchScript module.
    Cause("TorchScript: no XNNPACK", r"XNNPACK is not enabled",
          "the ref's TorchScript export calls optimize_for_mobile, which needs a torch built with XNNPACK",
          NO_MOBILE_OPTIMIZER),
    # Found on v5.0 x torch 2.14: the dynamo ONNX exporter rejects the fused Conv weights v5.0's model carries.
    Cause("ONNX dynamo: non-leaf parameter", r"Cannot assign non-leaf Tensor to parameter",
          "torch>=2.9's dynamo ONNX exporter rejects this ref's model (fused Conv weights); the TorchScript-based "
          "exporter (dynamo=False) is the known way round", DYNAMO_OFF),
    # Found on v5.0 x torch 2.14 with --dynamic: the dynamo exporter cannot translate the script's dynamic_axes.
    Cause("ONNX dynamo: dynamic_axes", r"Failed to convert 'dynamic_axes' to 'dynamic_shapes'",
          "torch>=2.9's dynamo ONNX exporter cannot turn this ref's dynamic_axes into dynamic_shapes", DYNAMO_OFF),
    Cause("ONNX dynamo exporter", r"Failed to decompose the FX graph|Failed to export the model with torch\.export",
          "torch>=2.9's default dynamo ONNX exporter failed on this model; see the log tail for its exception",
          DYNAMO_OFF),
    # Found on v5.0 --dynamic, variants with decoded outputs: Detect caches its grid at the traced size, so the
    # "dynamic" graph only runs at the export size (ORT: "broadcast an axis by a dimension other than 1. 10 by 20").
    Cause("ONNX dynamic: grid fixed at export size", r"broadcast an axis by a dimension other than 1",
          "the exported graph holds Detect's grid for the export size, so --dynamic inputs of another size fail; "
          "export at the deployment size or use the raw variant 3"),
    Cause("ONNX Runtime run error", r"\[ONNXRuntimeError\]",
          "ONNX Runtime cannot run the exported graph at this input: see the message"),
    Cause("onnxscript missing", r"No module named '?onnxscript",
          "torch>=2.9 exports ONNX with the dynamo exporter, which needs onnxscript: add it to the env's extra"),
    Cause("pkg_resources missing", r"No module named '?pkg_resources",
          "setuptools>=81 removed pkg_resources, which YOLOv5 v6.0+ imports: pin setuptools<81 in the env's extra"),
    Cause("numpy alias removed", r"module 'numpy' has no attribute '(int|float|bool|object|str)'",
          "numpy>=1.24 removed np.int/np.float/...: pin numpy<1.24 for this ref"),
    Cause("font download offline", r"Arial(\.Unicode)?\.ttf",
          "YOLOv5 downloads Arial.ttf at import time; set YOLOV5_CONFIG_DIR to a folder holding any TTF as Arial.ttf"),
    # Exporters try optional back ends (CoreML, TF, TensorRT, ...) and log their absence: not a cause.
    Cause("missing module", r"No module named '(?!coremltools|tensorflow|tensorrt|openvino|paddle|onnxsim)([^']+)'",
          "a module the ref imports is not installed in the env: add it to the env's extra pins"),
    Cause("timeout", r"timed out after \d+", "the stage exceeded its timeout in [timeouts]"),
    Cause("crash", r"died with signal|exit code -\d+", "the process crashed (signal): see the log tail"),
)

WORKAROUNDS = {c.workaround.name: c.workaround for c in CAUSES if c.workaround}


def classify(*texts: str) -> Cause | None:
    """The first cause found in the first text that has one: pass the failure's own message before the log tail,
    so a stray line elsewhere in a log (another format's failure, an optional import) does not win."""
    for text in texts:
        for cause in CAUSES:
            if re.search(cause.pattern, text):
                return cause
    return None


def combine(fixes: list[Workaround]) -> Workaround:
    """Several workarounds applied together, as one (names joined with " + ")."""
    env: dict[str, str] = {}
    for fix in fixes:
        env.update(fix.env)
    return Workaround(name=" + ".join(f.name for f in fixes), env=env,
                      shims=tuple(s for f in fixes for s in f.shims), hint="; ".join(f.hint for f in fixes))


def name_of(*texts: str) -> str:
    """The name of the cause found in ``texts`` (see :func:`classify`), or "unclassified"."""
    cause = classify(*texts)
    return cause.name if cause else "unclassified"
