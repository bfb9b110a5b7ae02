"""Judging a cell: what the variant promises (counts and shapes, derived from the model), and whether the worker's
measurements keep those promises within the tolerances. The worker measures; this module decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.axes import FORMATS
from harness.config import Tolerances
from harness.patch.detect import expected_output_count
from harness.worker.protocol import Verification


def expected_shapes(variant: str, detect: dict[str, Any], batch: int, size: int) -> list[list[int]] | None:
    """Output shapes the variant promises for a (batch, 3, size, size) input; None for ``native`` (recorded only).

    Derived from the model's own Detect layer (nl, na, no, strides), never from constants: a P6 model has four
    detection layers, so variant ``3`` gives four raw tensors there.
    """
    if variant == "native":
        return None
    na, no = detect["na"], detect["no"]
    grids = [(size // int(s), size // int(s)) for s in detect["stride"]]
    raw = [[batch, na, ny, nx, no] for ny, nx in grids]
    decoded = [batch, na * sum(ny * nx for ny, nx in grids), no]
    npu = [[batch, na * no, ny, nx] for ny, nx in grids]  # each level's conv output, channels first
    shapes = {"1": [decoded], "3": raw, "4": [decoded, *raw], "npu": npu}[variant]
    if len(shapes) != expected_output_count(variant, detect["nl"]):  # one rule, two places: keep them agreeing
        raise RuntimeError(f"variant {variant}: {len(shapes)} shapes, expected_output_count disagrees")
    return shapes


@dataclass
class Judgement:
    status: str  # pass / fail
    stage: str
    message: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    expected_outputs: list[list[int]] | None = None
    parity: list[dict[str, Any]] = field(default_factory=list)
    # The post-processing contract (harness/worker/decode.py): None when the outputs hold no raw per-level tensors.
    decode: dict[str, Any] | None = None


def judge(variant: str, fmt: str, answer: Verification, tolerances: Tolerances) -> Judgement:
    """Read the worker's verify answer: counts, then shapes, then numbers, per input case (main, size, batch)."""
    backend = FORMATS[fmt].backend
    detect = answer["detect"]
    cases = answer["cases"]
    main = cases[0]
    j = Judgement("pass", "compare", "", outputs=main.get("outputs", []),
                  expected_outputs=expected_shapes(variant, detect, main["input_shape"][0], main["input_shape"][2]))
    problems: list[str] = []
    broken: list[str] = []  # cases the backend could not run at all
    for case in cases:
        batch, size = case["input_shape"][0], case["input_shape"][2]
        where = "" if case["name"] == "main" else f" at batch {batch}, size {size}"
        if "error" in case:
            broken.append(f"{backend} cannot run the export{where or ' at the export size'}: {case['error']}")
            continue
        eager = [o["shape"] for o in case["eager"]]
        got = [o["shape"] for o in case["outputs"]]
        want = expected_shapes(variant, detect, batch, size)
        if want is not None and eager != want:
            # The raw levels where decoded outputs were promised: the patched return never ran (an export switch
            # such as v5.0's `self.training |= self.export` returned first). causes.py names this.
            dead = (" — the edited return is never reached: the model returns its raw levels"
                    if variant != "3" and eager == expected_shapes("3", detect, batch, size) else "")
            problems.append(f"eager PyTorch gives {len(eager)} output(s) {eager}{where}, variant {variant} expects "
                            f"{len(want)} {want}{dead}")
        if len(got) != len(eager):
            problems.append(f"{backend} gives {len(got)} output(s){where}, eager PyTorch {len(eager)}")
        elif got != eager:
            problems.append(f"{backend} shapes {got} differ from eager PyTorch {eager}{where}")
        for index, metrics in enumerate(case["parity"]):
            ok = ("error" not in metrics and metrics["finite"] and metrics["exceeding"] == 0
                  and metrics["cosine"] >= tolerances.min_cosine)
            j.parity.append({"case": case["name"], "backend": backend, "output": index,
                             "name": case["outputs"][index]["name"], "pass": ok,
                             **{k: metrics.get(k) for k in ("max_abs", "max_rel", "cosine", "min_tolerance",
                                                            "exceeding", "error")}})
            if not ok and "error" not in metrics:
                problems.append(
                    f"parity: {backend} output {index}{where} max_abs {metrics['max_abs']:.3g}, cosine "
                    f"{metrics['cosine']:.6f} beyond atol {tolerances.atol:g} / rtol {tolerances.rtol:g} / "
                    f"min_cosine {tolerances.min_cosine:g} (min tolerance that passes: {metrics['min_tolerance']:.3g})")
    j.decode = answer.get("decode")
    if j.decode is not None and not j.decode.get("ok"):
        # After counts, shapes and parity: when the backend's raw numbers already differ, that is the cause.
        problems.append(j.decode["message"])
    if broken:  # the artifact does not run where it should: it is broken, not a harness error
        j.status, j.stage, j.message = "fail", "run", "; ".join(broken + problems)
    elif problems:
        j.status, j.message = "fail", "; ".join(problems)
    else:
        worst = max((p["min_tolerance"] or 0.0 for p in j.parity), default=0.0)
        j.message = f"{len(j.outputs)} output(s) as expected; {backend} matches eager (min tolerance {worst:.2g})"
        if j.decode is not None:
            j.message += f"; {j.decode['message']}"
    return j
