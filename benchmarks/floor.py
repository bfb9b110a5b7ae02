"""The floor of one variant's cells, run in an env's Python without the harness: what a user does by hand.

``python floor.py JOB.json``: for each cell, run the ref's own export script (in this process, as ``python
export.py ...`` would, with the environment the export needs on this env), then load the file and run one
inference in its backend. No eager reference, no parity, no workaround search. Prints one JSON line of timings.
Kept plain on purpose (standard library + the env's torch/onnxruntime/numpy, and the worker's script runner and
shims); Python 3.8 compatible.
"""

import json
import os
import sys
import time


def main(path):
    with open(path) as fh:
        job = json.load(fh)
    t = time.time()
    import numpy as np
    import onnxruntime as ort
    import torch

    timings = {"import": time.time() - t, "cells": {}}
    os.environ.update(job.get("env") or {})
    if job.get("shims"):  # the ref needs the same edit to its export script a user would make
        from harness.worker import shims

        shims.apply(job["shims"])
    from harness.worker.attempt import run_script

    sys.path.insert(0, job["tree"])
    done = {}
    for cell in job["cells"]:
        t = time.time()
        key = json.dumps(cell["argv"])
        if key not in done:  # v5.0's script writes every format in one call: a user runs it once
            os.makedirs(cell["workdir"], exist_ok=True)
            target = os.path.join(cell["workdir"], "model.pt")
            if not os.path.exists(target):
                os.link(job["weights"], target)
            # As `python export.py ...` in the cell's folder, its output to floor.log (the worker's own runner).
            run_script(cell["argv"], cell["workdir"], os.path.join(cell["workdir"], "floor.log"))
            done[key] = cell["workdir"]
        export_s = time.time() - t
        workdir = done[key]
        names = [n for n in sorted(os.listdir(workdir)) if n.endswith(tuple(cell["suffixes"]))]
        if not names:
            timings["cells"][cell["id"]] = {"export": export_s, "error": "no file written"}
            continue
        artifact = os.path.join(workdir, names[0])
        t = time.time()
        x = np.random.RandomState(0).rand(1, 3, job["imgsz"], job["imgsz"]).astype(np.float32)
        entry = timings["cells"][cell["id"]] = {"export": export_s}
        try:
            if cell["format"] == "torchscript":
                with torch.no_grad():
                    torch.jit.load(artifact, map_location="cpu")(torch.from_numpy(x))
            else:
                session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
                session.run(None, {session.get_inputs()[0].name: x})
        except Exception as exc:  # a file that does not run is the cell's finding, not the floor's problem
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["infer"] = time.time() - t
    print(json.dumps(timings))


if __name__ == "__main__":
    main(sys.argv[1])
