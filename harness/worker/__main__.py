"""Entry point inside an env: ``python -m harness.worker JOB.json``.

A job is a JSON object with a ``task`` (probe, checkpoint, attempt, serve) and an ``out`` path; the answer is written
there as JSON. ``attempt`` also streams per-cell progress (see attempt.py), so a worker that dies still leaves its
finished cells and the stage it died in. ``serve`` is the warm worker (serve.py): it imports torch once and runs
every later job in a forked child.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import traceback
from typing import TYPE_CHECKING

from harness.worker import FONTS, serve
from harness.worker.attempt import attempt, first_line
from harness.worker.checkpoint import checkpoint

if TYPE_CHECKING:
    from harness.worker.protocol import ProbeAnswer, ProbeJob


def probe(job: ProbeJob) -> ProbeAnswer:
    """Versions as actually imported (not as pinned), and the font fix YOLOv5's plotting code needs offline."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, module in (("torch", "torch"), ("torchvision", "torchvision"), ("onnx", "onnx"),
                         ("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("opencv", "cv2"),
                         ("onnxscript", "onnxscript")):
        try:
            versions[name] = __import__(module).__version__
        except Exception as exc:  # a missing package is a fact to report, not a crash
            versions[name] = None
            versions[name + "_error"] = f"{type(exc).__name__}: {exc}"
    config_dir = job.get("yolov5_config_dir")
    if config_dir:
        # v6.0-v7.0 download Arial.ttf into YOLOV5_CONFIG_DIR at import time; any TTF under that name satisfies them.
        os.makedirs(config_dir, exist_ok=True)
        import matplotlib as mpl

        source = os.path.join(os.path.dirname(mpl.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        for target in FONTS:
            if not os.path.exists(os.path.join(config_dir, target)):
                shutil.copyfile(source, os.path.join(config_dir, target))
    return {"versions": versions}


def run_job(job):
    """Run one job and write its answer to ``job["out"]``: a failure is an answer too (the exit code says
    "answered")."""
    try:
        answer = TASKS[job["task"]](job)
        answer["ok"] = True
    except BaseException as exc:  # reported to the harness as data; the exit code says "answered"
        answer = {"ok": False, "error": {"type": type(exc).__name__, "message": first_line(exc),
                                         "traceback": traceback.format_exc()[-4000:]}}
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(answer, fh, indent=1)
    os.replace(tmp, job["out"])


TASKS = {"probe": probe, "checkpoint": checkpoint, "attempt": attempt,
         "serve": lambda job: serve.serve(job, run_job)}


def main(argv):
    with open(argv[1]) as fh:
        run_job(json.load(fh))


if __name__ == "__main__":
    main(sys.argv)
