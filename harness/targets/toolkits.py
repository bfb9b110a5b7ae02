"""What each downstream target is, as data: its toolkit and pins, the artifact it takes, its options.

One row per target; check.py and env.py read nothing target-specific elsewhere, and envside.py keeps one runner per
toolkit behind the same interface. Pins are the ones measured here (Linux x86_64, Python 3.11, PyPI only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Toolkit:
    """A downstream target: ``name`` is its [targets.NAME]."""

    name: str
    tool: str  # the distribution that compiles, and its version (shown in results)
    version: str
    python: str
    requirements: tuple[str, ...]
    artifact: str  # the export format it takes: "onnx" or "torchscript"
    reference: str  # what its outputs are compared with: "onnxruntime" or "torchscript"
    defaults: dict[str, Any] = field(default_factory=dict)  # the [targets.NAME] options and their defaults
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # allowed values of string options
    # What its warm process imports once before forking a child per check (harness/targets/envside.py serve): the
    # toolkit and the reference runtime, the costly part of a check's start.
    preload: tuple[str, ...] = ()
    int8: tuple[str, Any] | None = None  # the option and value that ask for an INT8 build calibrated on photos
    notes: str = ""

    def quantized(self, settings: dict[str, Any]) -> bool:
        """Whether ``settings`` (a [targets.NAME]'s options) build an INT8 model."""
        return self.int8 is not None and settings.get(self.int8[0]) == self.int8[1]

    @property
    def warm_imports(self) -> list[str]:
        return [*self.preload, *COMMON_PRELOAD]

    @property
    def formats(self) -> tuple[str, ...]:
        """The cell formats whose files it compiles ([targets.NAME] formats may narrow them, never widen)."""
        return (self.artifact,)


# The letterboxed photo is read with the worker's own inputs.py (cv2), so every env carries opencv (the matrix's pin).
OPENCV = "opencv-python-headless==4.13.0.92"

# What every target env's check reads with: the photo (cv2), the matrix's runners, the decode + NMS check.
COMMON_PRELOAD = ("numpy", "cv2", "harness.worker.inputs", "harness.worker.runners", "harness.worker.decode")

TOOLKITS: dict[str, Toolkit] = {t.name: t for t in (
    Toolkit(
        "openvino", "openvino", "2026.4.1", "3.11",
        # nncf: OpenVINO's post-training quantization (precision = "int8"), imported by that build only.
        ("openvino==2026.4.1", "nncf==3.4.0", "onnxruntime==1.23.2", "numpy==2.4.6", OPENCV),
        artifact="onnx", reference="onnxruntime",
        defaults={"device": "CPU", "precision": "f32"},
        choices={"device": ("CPU",), "precision": ("f32", "f16", "bf16", "int8")},
        preload=("openvino", "onnxruntime"),
        int8=("precision", "int8"),
        notes="convert_model + compile_model on the CPU plugin; precision f32/f16/bf16 is INFERENCE_PRECISION_HINT, "
              "int8 quantizes with NNCF first, calibrated on the ref's data/images photos",
    ),
    Toolkit(
        "rknn", "rknn-toolkit2", "2.5.0", "3.11",
        # rknn-toolkit2 2.5.0 requires torch<=2.4.0, numpy<=1.26.4, onnx<=1.18 and pkg_resources (setuptools<81);
        # torch 2.1.2 is the matrix's own pin, so its wheels are shared with py311-torch2.1; it brings its own opencv.
        ("rknn-toolkit2==2.5.0", "torch==2.1.2", "numpy==1.26.4", "setuptools<81"),
        artifact="onnx", reference="onnxruntime",
        defaults={"platform": "rk3588", "quantize": False},
        choices={"platform": ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1126b", "rk2118")},
        preload=("rknn.api", "onnxruntime"),
        int8=("quantize", True),
        notes="load_onnx -> build (quantize = true: INT8, calibrated on the ref's data/images photos) -> "
              "init_runtime() with no target: the toolkit's x86 simulator",
    ),
    Toolkit(
        "ncnn", "pnnx", "20261020", "3.11",
        # pnnx converts TorchScript with the torch of its env; ncnn's Python binding runs the result.
        ("pnnx==20261020", "ncnn==1.0.20261020", "torch==2.14.1", "numpy==2.4.6", OPENCV),
        artifact="torchscript", reference="torchscript",
        defaults={"fp16": False},
        preload=("torch", "ncnn", "pnnx"),
        notes="pnnx model.torchscript inputshape=[1,3,S,S] -> ncnn param/bin, run with the ncnn binding",
    ),
)}


def toolkit(name: str) -> Toolkit:
    return TOOLKITS[name]
