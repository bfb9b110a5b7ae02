"""Vendor export profiles, as data: what each published deployment guide tells a YOLOv5 team to do before its
compiler, one row per guide, each saying where it was read.

A profile is a Detect edit (one of the harness's variants), the formats and export flags the guide uses, the target
it compiles for and what the guide's post-processing expects. ``run --profile NAME`` runs a profile's variants and
formats (and its target when the harness has it); the report's table of the guides' lines shows, per profile and
ref, whether its edit works as the guide writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.patch.detect import GUIDE_RETURNS, NPU_STATEMENT


@dataclass(frozen=True)
class Profile:
    name: str  # what `--profile` takes
    vendor: str
    guide: str  # where it was read
    read_from: str  # what of the guide this row follows
    variants: tuple[str, ...]  # the Detect edits it prints (harness variants)
    edits: dict[str, str]  # variant -> the edit as the guide writes it
    formats: tuple[str, ...]
    export_flags: tuple[str, ...]  # the export.py flags the guide runs
    target: str  # the [targets.NAME] it compiles for (tpu-mlir: the `compile` command)
    post_processing: str


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        name="sophgo", vendor="Sophgo (tpu-mlir / BM1684X)",
        guide="Sophgo's YOLOv5 export guide",
        read_from="edit the last `return` of Detect.forward in models/yolo.py for 1, 3 or 4 outputs, then "
                  "`export.py --include onnx --dynamic` and `export.py --include torchscript`",
        variants=("1", "3", "4"), edits={v: f"return {line}" for v, line in GUIDE_RETURNS.items()},
        formats=("onnx", "onnx-dynamic", "torchscript"),
        export_flags=("--include onnx --dynamic", "--include torchscript"), target="tpu-mlir",
        post_processing="1 output: decoded boxes, NMS only; 3 outputs: sigmoid and the grid/anchor decode by hand",
    ),
    Profile(
        name="rockchip", vendor="Rockchip (RKNN NPUs: RK3588, RK3568, ...)",
        guide="rknn-toolkit2's YOLOv5 demo and rknn_model_zoo",
        read_from="the outputs are each level's convolution before Detect's reshape and transpose, [1,255,80,80], "
                  "[1,255,40,40], [1,255,20,20] for yolov5s at 640; "
                  "rknn.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform='rk3588')",
        variants=("npu",), edits={"npu": NPU_STATEMENT}, formats=("onnx",), export_flags=("--include onnx",),
        target="rknn",
        post_processing="per level: view (bs, 3, 85, ny, nx), permute to (bs, 3, ny, nx, 85), sigmoid, grid/anchor "
                        "decode, then NMS (the device may hand the outputs over as NHWC)",
    ),
)}
