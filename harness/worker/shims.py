"""Named in-process workarounds, applied before a ref's export script runs (harness/verify/causes.py names when).

Each is the smallest change a user could make by hand to the ref's export.py, done here without editing the tree,
so the same patched tree serves the out-of-the-box attempt and the workaround attempt alike.
"""

import functools


def onnx_dynamo_off():
    """torch>=2.9 made ``torch.onnx.export(dynamo=True)`` the default; call sites that do not choose get False,
    i.e. the TorchScript-based exporter YOLOv5's scripts were written for (the kwarg exists since torch 2.5)."""
    import torch.onnx

    original = torch.onnx.export
    if getattr(original, "_harness_shim", False):
        return

    @functools.wraps(original)
    def export(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    export._harness_shim = True  # type: ignore[attr-defined]  # marks a function already shimmed
    torch.onnx.export = export


def skip_optimize_for_mobile():
    """v5.0's TorchScript export always runs optimize_for_mobile, which needs XNNPACK; the traced module itself
    (what a deployment compiler takes) is kept as traced."""
    import torch.utils.mobile_optimizer

    torch.utils.mobile_optimizer.optimize_for_mobile = lambda module, *args, **kwargs: module


def upsample_recompute_scale_factor():
    """torch 1.11 added ``nn.Upsample.recompute_scale_factor`` and reads it in forward; modules unpickled from an
    older checkpoint lack it. A class-level default (None, the constructor's default) fills the gap for them."""
    import torch.nn

    if not hasattr(torch.nn.Upsample, "recompute_scale_factor"):
        torch.nn.Upsample.recompute_scale_factor = None


def offline_attempt_download():
    """v3.1/v4.0's ``utils.google_utils.attempt_download`` asks GitHub's API for the release list on every model load,
    even for a file that is on disk. A file on disk needs no download: for one, the call returns at once; a missing
    file still goes to the ref's own code. Applied after the ref's tree is on sys.path, before its models import the
    function by name."""
    import importlib
    import os

    try:
        module = importlib.import_module("utils.google_utils")
    except ImportError:  # a ref without that module has nothing to shim
        return
    original = module.attempt_download
    if getattr(original, "_harness_shim", False):
        return

    @functools.wraps(original)
    def attempt_download(weights, *args, **kwargs):
        if os.path.isfile(str(weights).strip().replace("'", "")):
            return None
        return original(weights, *args, **kwargs)

    attempt_download._harness_shim = True  # type: ignore[attr-defined]
    module.attempt_download = attempt_download  # type: ignore[attr-defined]


def pin_output_names():
    """The export option "pinned output names" (harness/verify/causes.py PINNED_NAMES): every ``torch.onnx.export`` call
    names each output ``output0``, ``output1``, ... in order, as a deployer's own export call would, instead of the
    script's names for some outputs and the exporter's made-up ones for the rest. The outputs are counted by one
    forward at the export's input (the scripts run the same dry run just before); the script's dynamic axes follow
    their outputs to the new names."""
    import torch
    import torch.onnx

    original = torch.onnx.export
    if getattr(original, "_harness_pins_names", False):
        return

    def count(value):
        if isinstance(value, torch.Tensor):
            return 1
        if isinstance(value, (tuple, list)):
            return sum(count(v) for v in value)
        return 0

    @functools.wraps(original)
    def export(model, args, *rest, **kwargs):
        with torch.no_grad():
            n = count(model(*args) if isinstance(args, tuple) else model(args))
        pinned = [f"output{i}" for i in range(n)]
        renamed = dict(zip(kwargs.get("output_names") or [], pinned))
        axes = kwargs.get("dynamic_axes")
        if isinstance(axes, dict):
            kwargs["dynamic_axes"] = {renamed.get(k, k): v for k, v in axes.items()}
        kwargs["output_names"] = pinned
        return original(model, args, *rest, **kwargs)

    export._harness_pins_names = True  # type: ignore[attr-defined]
    torch.onnx.export = export


SHIMS = {"onnx-dynamo-off": onnx_dynamo_off, "skip-optimize-for-mobile": skip_optimize_for_mobile,
         "upsample-recompute-scale-factor": upsample_recompute_scale_factor,
         "offline-attempt-download": offline_attempt_download, "pin-output-names": pin_output_names}


def apply(names):
    for name in names:
        SHIMS[name]()
