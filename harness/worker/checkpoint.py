"""The checkpoint a cell exports when the user gives none: built from the ref's yaml with the ref's own Model class.

Its own module so the checkpoint cache (harness/run.py) is keyed by this file's code only: editing the rest of the
harness does not throw away every built checkpoint.
"""

import os
import random
import sys


def find_cfg(tree, cfg):
    for candidate in (cfg, os.path.join("models", cfg), os.path.join("models", "hub", cfg)):
        path = os.path.join(tree, candidate)
        if os.path.isfile(path):
            return path
    found = sorted(f for _, _, files in os.walk(os.path.join(tree, "models")) for f in files if f.endswith(".yaml"))
    there = ", ".join(found)
    raise FileNotFoundError(f"model cfg {cfg!r} not found under models/ or models/hub/ (there: {there})")


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
