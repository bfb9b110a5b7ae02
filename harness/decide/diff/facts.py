"""One side of a cell pair: what a deployment depends on in one result, read through one adapter.

``Facts.from_result`` is the only place the diff engine reads a cell result (harness/results/model.py): the verdict as a
value (``CellResult.judgement``), the deciding attempt's outputs and ONNX facts, parity, the compile verdict. A gate
baseline keeps exactly these Facts (``to_json``), so a baseline and a live result compare the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from harness.axes import FORMATS
from harness.results.model import CellResult, from_json, to_json
from harness.results.verdict import WORKING
from harness.verify.causes import WORKAROUNDS, chain_names

# Output names an exporter makes up rather than takes from the export script: they change with any edit of the graph
# (a new op before the output renumbers them), so a config must not be written on them. Each row: what makes it, seen
# where.
AUTO_NAMES: tuple[tuple[str, str], ...] = (
    (r"^\d+$", "the TorchScript-based exporter numbers unnamed values (v5.0 on torch 1.x-2.x: '403', '1182')"),
    (r"^onnx::", "the TorchScript-based exporter names a value after its op ('onnx::Sigmoid_345')"),
    (r"^/", "node-path names of the graph ('/model.24/Sigmoid_output_0')"),
    # torch >= 2.9's dynamo exporter names unnamed outputs after the aten op that made them (v6.0-v6.1 native: clone).
    (r"^(clone|cat|view|permute|sigmoid|reshape|contiguous|getitem|add|mul|pow|sub|split|slice|select)(_\d+)?$",
     "the dynamo exporter names an unnamed output after its op ('clone_1')"),
)
_AUTO = [re.compile(pattern) for pattern, _ in AUTO_NAMES]


def is_auto_name(name: str | None) -> bool:
    """A name the exporter made up (see AUTO_NAMES): not one to write a config on."""
    return name is not None and any(p.search(name) for p in _AUTO)


def shape_text(shape: list[Any] | None) -> str:
    return "x".join(str(d) for d in shape or []) or "scalar"


def imported(versions: dict[str, Any]) -> dict[str, str]:
    """The versions an env imports, per package ("absent" where it is not installed); the probe's ``<name>_error``
    entries (why ``<name>`` did not import: harness/worker/__main__.py) are left out."""
    return {k: str(v) if v else "absent" for k, v in versions.items() if not k.endswith("_error")}


@dataclass
class OutputFacts:
    """One exported output: its name (ONNX only), shape at the export size, dtype, and the dims the ONNX file
    declares (symbolic strings on dynamic axes; None for TorchScript)."""

    name: str | None = None
    shape: list[Any] = field(default_factory=list)
    dtype: str | None = None
    dims: list[Any] | None = None


@dataclass
class TargetFacts:
    """A downstream target's verdict on a cell ([targets.NAME], harness/targets/), as the comparison reads it."""

    outcome: str = "error"
    verdict: str = ""
    cause: str | None = None  # the deciding attempt's, when it did not work


@dataclass
class Facts:
    """What a deployment depends on in one result (the deciding attempt's, when a workaround decided the verdict).

    ``reading`` is the verdict without its out-of-the-box cause (``Verdict.reading``): two cells with the same
    reading stand the same way for a deployer. It and ``verdict`` are words for people; the diff reads ``outcome``,
    ``fix`` (``fixes``: its components) and ``cause``.
    """

    cell: str = ""
    ref: str = ""
    env: str = ""
    variant: str = ""
    format: str = ""
    commit: str | None = None
    source: str | None = None
    standin: str | None = None  # the stand-in distribution, e.g. yolov5==6.1.9; None for upstream code
    outcome: str = "error"
    verdict: str = ""
    reading: str = ""
    fix: str | None = None  # the workaround chain the verdict needs (harness/verify/causes.py combine)
    first_cause: str | None = None  # the out-of-the-box attempt's cause
    cause: str | None = None  # the deciding attempt's cause when it did not work
    versions: dict[str, str] = field(default_factory=dict)  # what the env imports: python, torch, onnx, ...
    options: list[str] = field(default_factory=list)  # export options every attempt ran with (causes.EXPORT_OPTIONS)
    outputs: list[OutputFacts] = field(default_factory=list)
    opset: int | None = None  # written into the ONNX file
    opset_requested: int | None = None
    ir_version: int | None = None
    external_data: bool | None = None
    data_files: list[str] = field(default_factory=list)
    parity_pass: bool | None = None
    min_tolerance: float | None = None  # the largest minimum passing tolerance over every parity check
    tolerances: dict[str, float] | None = None
    detect_nl: int | None = None  # detection layers (3 on P5, 4 on P6): how many raw outputs variant 3 has
    guide_forms: list[str] = field(default_factory=list)  # patch-form workarounds in the fix (harness/verify/causes.py)
    compile_outcome: str | None = None  # tpu-mlir's verdict (harness/results/verdict.py outcomes); None: not compiled
    compile_reading: str | None = None
    compile_fix: str | None = None
    compile_cause: str | None = None
    targets: dict[str, TargetFacts] = field(default_factory=dict)  # absent: the target did not check the cell

    @classmethod
    def from_result(cls, result: CellResult) -> Facts:
        """The adapter from a cell result: the one function that knows the result's shape."""
        verdict = result.judgement
        deciding = result.deciding
        fix = verdict.fix if verdict.outcome == "workaround" else None
        export = deciding.export
        onnx = export.onnx if export else None
        declared: list[Any] = [o.get("shape") for o in onnx.outputs] if onnx else []
        outputs = [OutputFacts(o.name, list(o.shape), o.dtype,
                               list(declared[i]) if i < len(declared) and declared[i] is not None else None)
                   for i, o in enumerate(deciding.outputs)]
        parity = deciding.parity
        worst = [p.min_tolerance for p in parity if p.min_tolerance is not None]
        onnx_files = [f.get("name", "") for f in (export.files if export else [])]
        facts = cls(
            cell=result.cell, ref=result.ref, env=result.env, variant=result.variant, format=result.format,
            commit=result.commit, source=result.source,
            standin=(result.standin or {}).get("distribution") if result.standin else None,
            outcome=verdict.outcome, verdict=verdict.line(), reading=verdict.reading(), fix=fix,
            first_cause=result.first.cause, cause=None if verdict.works else (verdict.cause or "unclassified"),
            versions=imported(result.versions), options=list(result.options),
            outputs=outputs, opset=(onnx.opset if onnx else None) or (export.opset_written if export else None),
            opset_requested=export.opset_requested if export else None,
            ir_version=onnx.ir_version if onnx else None,
            external_data=onnx.external_data if onnx else None,
            data_files=[n for n in onnx_files if onnx and onnx.external_data and not n.endswith(".onnx")],
            parity_pass=all(p.passed for p in parity) if parity else None,
            min_tolerance=max(worst) if worst else None, tolerances=result.tolerances,
            detect_nl=deciding.detect.nl if deciding.detect else None,
            guide_forms=[n for n in chain_names(fix) if n in WORKAROUNDS and WORKAROUNDS[n].patch_form])
        if result.compile is not None:
            compiled = result.compile.judgement
            facts.compile_outcome, facts.compile_reading = compiled.outcome, compiled.reading()
            facts.compile_fix = compiled.fix if compiled.outcome == "workaround" else None
            facts.compile_cause = compiled.cause if compiled.outcome in ("broken", "error") else None
        facts.targets = {name: TargetFacts(target.outcome(), target.verdict, target.judgement.cause)
                         for name, target in result.targets.items()}
        return facts

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        facts = from_json(data, cls)
        if facts.compile_reading is not None and facts.compile_outcome is None:
            # A baseline saved before the compile outcome was kept: its typed fields say all but works/skipped.
            facts.compile_outcome = ("workaround" if facts.compile_fix else "broken" if facts.compile_cause else
                                     "skipped" if facts.compile_reading == "skipped" else "works")
        return facts

    @property
    def works(self) -> bool:
        return self.outcome in WORKING

    @property
    def fixes(self) -> tuple[str, ...]:
        """The workarounds the verdict needs, each on its own (a chain "A + B" is two)."""
        return chain_names(self.fix)

    @property
    def onnx(self) -> bool:
        return self.format in FORMATS and FORMATS[self.format].backend == "onnxruntime"

    @property
    def auto_names(self) -> list[str]:
        """The output names the exporter made up (a config naming them breaks with any graph edit)."""
        return [o.name for o in self.outputs if o.name and is_auto_name(o.name)]


__all__ = ["AUTO_NAMES", "Facts", "OutputFacts", "is_auto_name", "shape_text"]
