"""Known ways a tpu-mlir compile fails, as data: what the log shows, what it means, and a workaround when one is safe.

Each row says how it was found. ``classify`` takes the first row whose patterns match the failed stage's log (and
whose ONNX condition holds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# onnxruntime 1.16.3 (tpu_mlir 1.30.2's [onnx] pin) loads ONNX IR versions up to 9, onnx 1.14.1's checker too.
MAX_IR_VERSION = 9


@dataclass(frozen=True)
class Workaround:
    name: str
    hint: str
    ir_version: int | None = None  # rewrite the model's IR version field to this (envside.inspect)
    suffix: str | None = None  # give model_transform the file under a name ending in this


@dataclass(frozen=True)
class Cause:
    name: str
    patterns: tuple[str, ...]  # regular expressions, any of which in the stage's log
    hint: str
    stages: tuple[str, ...] = ("transform", "deploy")
    ir_above: int | None = None  # only when the ONNX file's IR version is above this
    workaround: Workaround | None = None


IR9 = Workaround(
    "ir_version=9",
    f"rewrite the model's IR version field to {MAX_IR_VERSION} (the graph is unchanged: opset 18 is valid in IR 8-9; "
    f"IR 10 adds types such as int4 that YOLOv5 does not use), or export with the TorchScript-based exporter "
    f"(torch.onnx.export(..., dynamo=False)), which writes IR 7-8",
    ir_version=MAX_IR_VERSION,
)

# Sophgo's guide, step 2.3 (TorchScript): "suffix exported models with '.pt' to avoid errors in subsequent model
# compilation". model_transform picks its front end by the file's suffix and refuses any other ("unsupport model").
PT_SUFFIX = Workaround(
    "suffix .pt",
    "give model_transform the TorchScript file under a name ending in .pt (export.py of v6.1 and later writes "
    "*.torchscript; v5.0 and v6.0 wrote *.torchscript.pt, which it takes as written)",
    suffix=".pt",
)

CAUSES: tuple[Cause, ...] = (
    # torch >= 2.9's dynamo exporter writes IR version 10 (v6.0-v7.0 on torch 2.14, measured here). model_transform
    # converts the graph, then its ONNX reference run fails in onnxruntime 1.16.3 ("Unsupported model IR version: 10,
    # max supported IR version: 9"), which tpu-mlir's model_runner swallows, so its log shows only this
    # UnboundLocalError.
    Cause("onnx IR version > 9",
          (r"Unsupported model IR version", r"UnboundLocalError: local variable 'session' referenced",
           r"ir_version \d+ is higher than the checker's"),
          f"tpu-mlir's onnxruntime 1.16.3 loads ONNX IR <= {MAX_IR_VERSION}; torch's dynamo exporter writes IR 10",
          stages=("transform",), ir_above=MAX_IR_VERSION, workaround=IR9),
    # model_transform.py's get_model_transform: a --model_def whose suffix names no front end (measured: v7.0's
    # model.torchscript -> "RuntimeError: unsupport model:model.torchscript"; the same bytes as model.pt compile).
    Cause("model file suffix not taken", (r"unsupport model:",),
          "model_transform chooses its front end by file suffix: .onnx, .pt (TorchScript), .prototxt, .tflite, ...; "
          "a TorchScript file named *.torchscript is refused", stages=("transform",), workaround=PT_SUFFIX),
    # The wheel's bundled Ubuntu glibc (env.py repairs it; this row names it if the repair did not apply).
    Cause("bundled glibc too old", (r"GLIBC_\d+\.\d+' not found",),
          "tpu_mlir/lib/third_party holds an older glibc than the system's; see harness/compile/env.py"),
    Cause("setuptools >= 81", (r"No module named 'pkg_resources'",),
          "tpu_mlir imports pkg_resources, which setuptools 81 removed; the env pins setuptools<81"),
    # tpu-mlir's own chain checks (npz_tool compare) below its tolerance: the tool exits non-zero after "FAILED".
    Cause("tpu-mlir comparison failed", (r"npz compare FAILED", r"\[!Error\]: npz_tool\.py compare"),
          "a tpu-mlir chain comparison (ONNX vs top MLIR, or tpu MLIR vs top, or bmodel vs tpu) is below tolerance"),
    Cause("unsupported operator", (r"(?i)not support(ed)? op", r"(?i)unsupported op", r"OpType .* not supported"),
          "the ONNX graph has an operator tpu-mlir cannot convert"),
)


def classify(stage: str, log_text: str, onnx_info: dict[str, Any] | None) -> Cause | None:
    """The first known cause of a failure of ``stage`` whose patterns occur in ``log_text``, or None."""
    ir = (onnx_info or {}).get("ir_version") or 0
    for cause in CAUSES:
        if stage not in cause.stages:
            continue
        if cause.ir_above is not None and ir <= cause.ir_above:
            continue
        if any(re.search(p, log_text) for p in cause.patterns):
            return cause
    return None
