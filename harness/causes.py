"""Known reasons a cell breaks, and the safe workaround for those that have one — data, matched against logs.

A row names the cause, the pattern that recognises it in an exporter's log or a worker's error, a one-line hint,
and optionally a workaround: extra environment for the export rerun. Order matters: the first match wins, so put
specific patterns before general ones. Issue #3 grows this table as more torch/onnx/numpy pins join the matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workaround:
    name: str
    env: dict[str, str] = field(default_factory=dict)
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

CAUSES: tuple[Cause, ...] = (
    Cause("torch.load weights_only", r"Weights only load failed|WeightsUnpickler error",
          "torch>=2.6 loads with weights_only=True by default and YOLOv5 checkpoints are pickled modules",
          NO_WEIGHTS_ONLY),
    Cause("onnxscript missing", r"No module named '?onnxscript",
          "torch>=2.9 exports ONNX with the dynamo exporter, which needs onnxscript: add it to the env's extra"),
    Cause("pkg_resources missing", r"No module named '?pkg_resources",
          "setuptools>=81 removed pkg_resources, which YOLOv5 v6.0+ imports: pin setuptools<81 in the env's extra"),
    Cause("numpy alias removed", r"module 'numpy' has no attribute '(int|float|bool|object|str)'",
          "numpy>=1.24 removed np.int/np.float/...: pin numpy<1.24 for this ref"),
    Cause("font download offline", r"Arial(\.Unicode)?\.ttf",
          "YOLOv5 downloads Arial.ttf at import time; set YOLOV5_CONFIG_DIR to a folder holding any TTF as Arial.ttf"),
    Cause("missing module", r"No module named '([^']+)'",
          "a module the ref imports is not installed in the env: add it to the env's extra pins"),
    Cause("timeout", r"timed out after \d+", "the stage exceeded its timeout in [timeouts]"),
    Cause("crash", r"died with signal|exit code -\d+", "the process crashed (signal): see the log tail"),
)

WORKAROUNDS = {c.workaround.name: c.workaround for c in CAUSES if c.workaround}


def classify(text: str) -> Cause | None:
    """The first cause whose pattern occurs in ``text`` (an exporter log or a worker error), else None."""
    for cause in CAUSES:
        if re.search(cause.pattern, text):
            return cause
    return None


def name_of(text: str) -> str:
    """The name of the cause found in ``text``, or "unclassified"."""
    cause = classify(text)
    return cause.name if cause else "unclassified"
