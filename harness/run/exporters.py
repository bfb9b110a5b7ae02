"""How to call each YOLOv5 ref's *own* export script, as data keyed by the code shape found in the checkout.

The harness never reimplements an export: a deployment team runs the tag's script, so the matrix does too. What
differs between refs is where the script lives, its flags, and how it names what it writes; each row below says
which refs have that shape and how it was found (reading the scripts of the upstream tags and of the PyPI stand-ins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.axes import FORMATS
from harness.errors import HarnessError


@dataclass(frozen=True)
class ExporterShape:
    """One way a ref exports. ``argv`` and ``include``/``dynamic`` are templates filled by :func:`command`."""

    name: str
    script: str  # path inside the checkout
    marker: str  # text the script must contain to have this shape
    argv: tuple[str, ...]  # after the script path; {weights} and {imgsz} are filled in
    include: dict[str, tuple[str, ...]]  # extra argv per format
    opset_pattern: str  # regex whose group 1 is the opset the script asks for by default
    covers: str  # which refs, and how we know
    opset_flag: str | None = None  # the flag that sets the opset, when the script has one (the --opset workaround)


EXPORTERS: tuple[ExporterShape, ...] = (
    ExporterShape(
        name="export.py --include",
        script="export.py",
        marker="--include",
        argv=("--weights", "{weights}", "--imgsz", "{imgsz}", "--batch-size", "1", "--device", "cpu"),
        include={"onnx": ("--include", "onnx"), "onnx-dynamic": ("--include", "onnx", "--dynamic"),
                 "torchscript": ("--include", "torchscript")},
        opset_pattern=r"['\"]--opset['\"],\s*type=int,\s*default=(\d+)",
        covers="v6.0-v7.0 upstream and PyPI yolov5 6.0.x-7.0.x: root export.py with --include/--imgsz/--opset",
        opset_flag="--opset",
    ),
    ExporterShape(
        name="models/export.py (all formats at once)",
        script="models/export.py",
        marker="--img-size",
        # v5.0 writes TorchScript, ONNX (and CoreML when installed) in one call; --dynamic affects ONNX only.
        argv=("--weights", "{weights}", "--img-size", "{imgsz}", "{imgsz}", "--batch-size", "1"),
        include={"onnx": (), "onnx-dynamic": ("--dynamic",), "torchscript": ()},
        opset_pattern=r"opset_version=(\d+)",
        covers="v3.0-v5.0 upstream and PyPI yolov5 5.0.x: models/export.py, opset 12 hard-coded",
    ),
)


def detect_exporter(tree: Path, ref: str) -> ExporterShape:
    """The first row whose script exists in ``tree`` and contains its marker."""
    for shape in EXPORTERS:
        script = tree / shape.script
        if script.is_file() and shape.marker in script.read_text(errors="replace"):
            return shape
    raise HarnessError(f"export: no known export script at {ref} (looked for "
                       f"{', '.join(s.script for s in EXPORTERS)}) — this ref is not supported yet")


def command(shape: ExporterShape, tree: Path, weights: str, imgsz: int, fmt: str,
            opset: int | None = None) -> list[str]:
    """argv after the interpreter: the script's absolute path, its flags, the format's extra flags, and ``opset``
    (a workaround's) for ONNX formats when the script takes one."""
    fill = {"weights": weights, "imgsz": str(imgsz)}
    argv = [str(tree / shape.script), *(a.format(**fill) for a in shape.argv), *shape.include[fmt]]
    if opset is not None and shape.opset_flag and fmt != "torchscript":
        argv += [shape.opset_flag, str(opset)]
    return argv


def requested_opset(shape: ExporterShape, tree: Path, opset: int | None = None) -> int | None:
    """The opset the script asks torch for (``opset`` when a workaround passes one it takes, else its default), to
    compare with the opset actually written."""
    if opset is not None and shape.opset_flag:
        return opset
    match = re.search(shape.opset_pattern, (tree / shape.script).read_text(errors="replace"))
    return int(match.group(1)) if match else None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_line(log: str, fmt: str) -> str | None:
    """The exporter's own "<format>: export failure: ..." line for ``fmt`` (they log it and still exit 0), else the
    last exception line of a traceback, else None."""
    lines = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    failures = [line for line in lines if "export failure" in line]
    mine = [line for line in failures if line.startswith(FORMATS[fmt].log_label + ":")]
    if mine or failures:
        line = (mine or failures)[0]
        # torch's dynamo exporter puts the real exception in an "## Exception summary" block after a generic line;
        # look only up to the next format's verdict, which is another exception's business.
        after = lines[lines.index(line) + 1:]
        end = next((i for i, x in enumerate(after) if "export failure" in x or "export success" in x), len(after))
        summary = next((x for x in after[:end] if x.startswith("<class '")), None)
        return f"{line} [{summary}]" if summary else line
    raised = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", line)]
    return raised[-1] if raised else None


def artifacts(files: list[Path], fmt: str) -> list[Path]:
    """The files among ``files`` that are this format's export."""
    suffixes = FORMATS[fmt].suffixes
    return sorted(f for f in files if f.name.endswith(suffixes))
