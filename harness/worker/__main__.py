"""Entry point inside an env: ``python -m harness.worker JOB.json``.

A job is a JSON object with a ``task`` (probe, checkpoint, attempt) and an ``out`` path; the answer is written there
as JSON. ``attempt`` also streams per-cell progress (see attempt.py), so a worker that dies still leaves its
finished cells and the stage it died in.
"""

import json
import os
import platform
import random
import shutil
import sys
import time
import traceback

from harness.worker.attempt import attempt, first_line


def probe(job):
    """Versions as actually imported (not as pinned), and the font fix YOLOv5's plotting code needs offline."""
    versions = {"python": platform.python_version()}
    for name, module in (("torch", "torch"), ("torchvision", "torchvision"), ("onnx", "onnx"),
                         ("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("opencv", "cv2"),
                         ("onnxscript", "onnxscript")):
        try:
            versions[name] = __import__(module).__version__
        except Exception as exc:  # a missing package is a fact to report, not a crash
            versions[name] = None
            versions[name + "_error"] = "%s: %s" % (type(exc).__name__, exc)
    config_dir = job.get("yolov5_config_dir")
    if config_dir:
        # v6.0-v7.0 download Arial.ttf into YOLOV5_CONFIG_DIR at import time; any TTF under that name satisfies them.
        os.makedirs(config_dir, exist_ok=True)
        import matplotlib

        source = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        for target in ("Arial.ttf", "Arial.Unicode.ttf"):
            if not os.path.exists(os.path.join(config_dir, target)):
                shutil.copyfile(source, os.path.join(config_dir, target))
    return {"versions": versions}


def find_cfg(tree, cfg):
    for candidate in (cfg, os.path.join("models", cfg), os.path.join("models", "hub", cfg)):
        path = os.path.join(tree, candidate)
        if os.path.isfile(path):
            return path
    found = sorted(f for _, _, files in os.walk(os.path.join(tree, "models")) for f in files if f.endswith(".yaml"))
    raise FileNotFoundError("model cfg %r not found under models/ or models/hub/ (there: %s)" % (cfg, ", ".join(found)))


def checkpoint(job):
    """Build the model from the ref's yaml with the ref's own Model class and a fixed seed, saved the way train.py
    saves (a pickled module under 'model'), so the ref's attempt_load and exporter accept it."""
    import numpy as np
    import torch

    tree = job["tree"]
    sys.path.insert(0, tree)
    from models.yolo import Model

    seed = int(job["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    nc = int(job["nc"])
    model = Model(find_cfg(tree, job["cfg"]), 3, nc).float().eval()
    # train.py sets these before saving; v6.0/v6.1 exporters read model.nc, older loaders model.names.
    model.nc = nc
    if not getattr(model, "names", None):
        model.names = [str(i) for i in range(nc)]
    out = job["weights_out"]
    tmp = out + ".tmp"
    torch.save({"epoch": -1, "best_fitness": None, "model": model, "ema": None, "updates": None,
                "optimizer": None}, tmp)
    os.replace(tmp, out)
    head = model.model[-1]
    return {"detect": {"nl": int(head.nl), "na": int(head.na), "no": int(head.no), "nc": int(head.nc),
                       "stride": [float(s) for s in model.stride.tolist()]},
            "parameters": int(sum(p.numel() for p in model.parameters()))}


TASKS = {"probe": probe, "checkpoint": checkpoint, "attempt": attempt}


def main(argv):
    with open(argv[1]) as fh:
        job = json.load(fh)
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


if __name__ == "__main__":
    main(sys.argv)
