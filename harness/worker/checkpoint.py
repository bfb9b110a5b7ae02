"""The checkpoint a cell exports when the user gives none: built from the ref's yaml with the ref's own Model class.

Its own module so the checkpoint cache (harness/run/matrix.py) is keyed by this file's code only: editing the rest of
the
harness does not throw away every built checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the wire types (harness/worker/protocol.py); never imported in an env
    from harness.worker.protocol import CheckpointAnswer, CheckpointJob

# Ways to build the same model when the ref's Model() fails on this torch, as data: the error each way sidesteps (a
# regex on the exception line), its name (recorded on the checkpoint as ``built_with``, never on the user's export)
# and a context to build in. The model (weights, buffers, strides) is the one Model() builds on the torch the ref was
# written for.
#   torch.no_grad(): v1.0-v3.1's _initialize_biases does `b = mi.bias.view(na, -1); b[:, 4] += ...`, which
#   torch >= 1.8 refuses on a view of a leaf that requires grad; without grad recording the same add is allowed and
#   gives the same values (upstream's own fix in v4.0 is `b.data[:, 4] += ...`, the same write outside autograd).
BUILD_WAYS = (
    (r"a view of a leaf Variable that requires grad is being used in an in-place operation", "torch.no_grad()",
     "no_grad"),
)
NO_BUILD = ("the harness could not build a checkpoint from cfg on this torch: pass your own weights "
            "(`[model] weights`)")


class CannotBuildError(RuntimeError):
    """Every way of building the checkpoint failed on this torch (harness/verify/causes.py names it)."""


def _context(kind):
    import torch

    return torch.no_grad() if kind == "no_grad" else contextlib.nullcontext()


def build(make, seed):
    """``make()`` from the same seed, plainly, then each way whose error it failed with. Returns (model, built_with):
    built_with is None when Model() worked as the ref's train.py runs it."""
    tried = []
    first = None
    for pattern, name, kind in ((None, None, None), *BUILD_WAYS):
        if pattern is not None and not (first and re.search(pattern, first)):
            continue
        _seed(seed)
        try:
            with _context(kind):
                return make(), name
        except Exception as exc:  # the ref's own code: any failure
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if first is None:
                first = line
                if not any(re.search(p, line) for p, _, _ in BUILD_WAYS):
                    raise  # no way sidesteps it: the failure as it is, for harness/verify/causes.py to name
            tried.append(f"{name or 'plain'}: {line}")
    raise CannotBuildError(f"{NO_BUILD} (tried {'; '.join(tried)})")


def _seed(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def find_cfg(tree, cfg):
    for candidate in (cfg, os.path.join("models", cfg), os.path.join("models", "hub", cfg)):
        path = os.path.join(tree, candidate)
        if os.path.isfile(path):
            return path
    found = sorted(f for _, _, files in os.walk(os.path.join(tree, "models")) for f in files if f.endswith(".yaml"))
    there = ", ".join(found)
    raise FileNotFoundError(f"model cfg {cfg!r} not found under models/ or models/hub/ (there: {there})")


def checkpoint(job: CheckpointJob) -> CheckpointAnswer:
    """Build the model from the ref's yaml with the ref's own Model class and a fixed seed, saved the way train.py
    saves (a pickled module under 'model'), so the ref's attempt_load and exporter accept it."""
    import torch

    tree = job["tree"]
    sys.path.insert(0, tree)
    from models.yolo import Model

    nc = int(job["nc"])
    cfg = find_cfg(tree, job["cfg"])
    model, built_with = build(lambda: Model(cfg, 3, nc), int(job["seed"]))
    model = model.float().eval()
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
            "parameters": int(sum(p.numel() for p in model.parameters())), "built_with": built_with}
