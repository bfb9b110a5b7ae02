"""The two axes of a cell that the harness's code knows (refs and envs come from matrix.toml): Detect variants and
export formats, one table each. Everything else that depends on a variant or a format reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Detect-output variants: "native" leaves the ref's return alone; "1"/"3"/"4" rewrite it to that many outputs (on a
# P5 model; "3" is one raw tensor per detection layer, so four on P6); "npu" returns each level's convolution output
# before Detect reshapes it, (bs, na*no, ny, nx): the 4-D form Rockchip's and other NPU vendors' guides export, since
# many NPUs take no 5-D tensor. Strings, in TOML and in cell ids, so "native" and the counts share one type.
VARIANTS: tuple[str, ...] = ("native", "1", "3", "4", "npu")


@dataclass(frozen=True)
class Format:
    """One export format the harness drives through each ref's own export script."""

    name: str
    suffixes: tuple[str, ...]  # file endings an exporter gives it
    backend: str  # the runner that loads it (harness/worker/runners.py)
    log_label: str  # how exporters label it in their log ("ONNX: export failure: ...")
    dynamic: bool = False  # exported with dynamic axes: also checked at another size and batch


# ".torchscript.ptl" (v5.0's mobile lite-interpreter copy) is not a module torch.jit.load takes: not an artifact.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", (".onnx",), "onnxruntime", "ONNX"),
    Format("onnx-dynamic", (".onnx",), "onnxruntime", "ONNX", dynamic=True),
    Format("torchscript", (".torchscript", ".torchscript.pt"), "torchscript", "TorchScript"),
)}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)
