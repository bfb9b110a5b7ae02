"""The cell result: one typed definition, its JSON form, and the files that hold it.

Every producer (the supervisor, the compile check) builds these classes and every reader (report, gate, upgrade,
JUnit, benchmark) reads them; nothing else spells out a result's keys. A field is added here, once, with a default,
so older files still load. The JSON is the public contract (README, "Result schema", is checked against
``schema_table()`` by a test): ``to_json`` / ``from_json`` convert, with cattrs doing the nesting.

``SCHEMA_VERSION`` changes when a key changes meaning; a file of another version is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from harness.errors import HarnessError
from harness.files import write_json

SCHEMA_VERSION = 1
Status = Literal["pass", "fail", "error", "skip"]
# Where an attempt stopped. Export: checkout -> patch -> checkpoint -> export -> load -> run -> compare; the compile
# check (tpu-mlir) has its own transform -> deploy -> compare.
Stage = Literal["checkout", "patch", "checkpoint", "export", "load", "run", "compare", "transform", "deploy"]
STATUSES: tuple[str, ...] = get_args(Status)
# Outcome classes, in the order reports list them: the verdict line reduced to one word.
Outcome = Literal["works", "workaround", "broken", "error", "skipped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


@dataclass
class Output:
    """One output tensor of an export (ONNX names; TorchScript has none)."""

    name: str | None = None
    shape: list[Any] = field(default_factory=list)  # ints, or strings for symbolic ONNX dims
    dtype: str | None = None


@dataclass
class Parity:
    """A backend output against eager PyTorch for one input case (JSON key of ``passed``: ``pass``)."""

    case: str = "main"  # main; onnx-dynamic also "size" (half the size) and "batch" (batch 2)
    backend: str = ""
    output: int = 0
    name: str | None = None
    passed: bool = False
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    min_tolerance: float | None = None  # the smallest t with |d| <= t + t*|eager|: the tightest atol = rtol
    exceeding: int | None = None
    error: str | None = None


@dataclass
class OnnxFacts:
    """What the ONNX file declares, read from it (symbolic dims stay strings)."""

    opset: int | None = None
    ir_version: int | None = None
    producer: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    external_data: bool = False


@dataclass
class ExportFacts:
    """How the ref's own export script was called and what it wrote."""

    argv: list[str] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float | None = None
    shared_with: str | None = None  # another cell's folder, when both ran the very same export command
    opset_requested: int | None = None
    opset_written: int | None = None
    files: list[dict[str, Any]] = field(default_factory=list)  # {name, bytes}
    log: str | None = None
    onnx: OnnxFacts | None = None


@dataclass
class DetectInfo:
    """The model's detection head, the facts expected shapes are derived from."""

    detect_class: str = "Detect"
    nl: int = 0
    na: int = 0
    no: int = 0
    nc: int = 0
    stride: list[float] = field(default_factory=list)


@dataclass
class Attempt:
    """One run of a cell's export + verify: the out-of-the-box attempt (a CellResult's own fields) or a rerun."""

    status: Status = "error"
    stage: Stage | None = "export"
    cause: str | None = None
    message: str = ""
    log_tail: str = ""
    outputs: list[Output] = field(default_factory=list)
    expected_outputs: list[list[int]] | None = None
    parity: list[Parity] = field(default_factory=list)
    export: ExportFacts | None = None
    timings: dict[str, float] = field(default_factory=dict)
    detect: DetectInfo | None = None
    image: str | None = None  # the photo the parity inputs were made from
    shared_from: str | None = None  # the cell whose identical attempt this is (a failure before the model runs)
    # The decode check of the raw per-level outputs (harness/worker/decode.py): constants, output order, NMS match.
    decode: dict[str, Any] | None = None


@dataclass
class EarlierAttempt:
    """An intermediate workaround rerun that the next one replaced."""

    name: str = ""
    status: Status = "error"
    stage: Stage | None = None
    cause: str | None = None
    message: str = ""
    learned_from: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class WorkaroundRecord(Attempt):
    """The latest rerun with workarounds (harness/causes.py), what it changed, and the reruns before it."""

    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    shims: list[str] = field(default_factory=list)
    opset: int | None = None
    pins: dict[str, str] = field(default_factory=dict)
    patch_form: str | None = None  # "adapted": the patch table's form of the variant instead of the guide's line
    patch_diff: str | None = None  # that form's diff of models/yolo.py
    hint: str = ""
    earlier: list[EarlierAttempt] = field(default_factory=list)
    learned_from: str | None = None  # the cell whose step-by-step search found this chain (borrowed whole)
    not_tried: list[str] | None = None  # the intermediate steps a borrowed chain skipped

    def as_earlier(self) -> EarlierAttempt:
        return EarlierAttempt(self.name, self.status, self.stage, self.cause, self.message, self.learned_from,
                              dict(self.timings))


@dataclass
class CompileAttempt:
    """The out-of-the-box compile attempt, kept when a workaround decided the verdict."""

    status: Status = "error"
    stage: Stage | None = None
    cause: str | None = None
    message: str = ""
    log_tail: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    tpu_mlir_checks: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    artifacts_dir: str | None = None


@dataclass
class CompileSection(CompileAttempt):
    """The tpu-mlir compile check of one cell's ONNX file for one quantize mode (harness/compile/)."""

    tool: str = ""
    tool_version: str = ""
    processor: str = ""
    quantize: str = ""
    similarity: list[dict[str, Any]] = field(default_factory=list)  # per output: cosine, euclidean, max_abs
    output_names: list[str] = field(default_factory=list)
    argv: dict[str, list[str]] = field(default_factory=dict)
    onnx: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    reference: str | None = None
    workaround: dict[str, str] | None = None  # {name, hint}
    out_of_the_box: CompileAttempt | None = None
    env: dict[str, Any] | None = None
    export_attempt: str | None = None
    created: float | None = None
    inputs_key: str | None = None
    verdict: str = ""
    more: list[CompileSection] = field(default_factory=list)  # further quantize modes

    def refresh_verdict(self) -> str:
        """Set and return the verdict; ``status``/``cause`` are the deciding attempt's, ``out_of_the_box`` the first
        attempt's when a workaround reran it."""
        first = self.out_of_the_box or self
        fix = (self.workaround or {}).get("name")
        self.verdict = verdict_line(first.status, first.cause, self.message, fix, self.status, self.cause)
        return self.verdict


@dataclass
class CellResult(Attempt):
    """One cell (ref x env x variant x format): the out-of-the-box attempt, the workaround rerun, and their inputs."""

    schema: int = SCHEMA_VERSION
    cell: str = ""
    ref: str = ""
    commit: str | None = None
    source: str | None = None
    repo: str | None = None
    standin: dict[str, Any] | None = None
    env: str = ""
    pins: list[str] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    tolerances: dict[str, float] | None = None  # None in results older than the field
    variant: str = ""
    format: str = ""
    workaround: WorkaroundRecord | None = None
    patch_diff: str = ""
    artifacts_dir: str | None = None
    harness_version: str | None = None
    harness_fingerprint: str | None = None
    created: float = 0.0
    inputs_key: str | None = None
    sandbox: str | None = None  # the box env processes ran in (harness/sandbox.py), e.g. "bubblewrap 0.8.0 + ..."
    verdict: str = ""
    compile: CompileSection | None = None
    # How the harness built its own checkpoint when not as the ref's train.py does; None: as it does, or the user's.
    checkpoint: CheckpointNote | None = None

    # -- readings --------------------------------------------------------------------------------------------
    def final_attempt(self) -> Attempt:
        """The attempt that decides the verdict: the workaround rerun when the out-of-the-box attempt did not pass."""
        return self.workaround if self.status != "pass" and self.workaround else self

    def outcome(self) -> Outcome:
        """works, workaround (works with one), broken (ran, wrong outputs or parity), error (a stage could not
        finish), skipped."""
        if self.status == "pass":
            return "works"
        if self.status == "skip":
            return "skipped"
        last = self.final_attempt()
        if last is not self and last.status == "pass":
            return "workaround"
        return "broken" if last.status == "fail" else "error"

    def signature(self) -> list[tuple[str | None, list[Any]]]:
        """The exported outputs as (name, shape) pairs, from the deciding attempt: what a compiler config names."""
        return [(o.name, list(o.shape)) for o in self.final_attempt().outputs]

    def refresh_verdict(self) -> str:
        """Set and return the one-line reading: works / works with workaround X / broken: cause."""
        fix = self.workaround
        self.verdict = verdict_line(self.status, self.cause, self.message, fix.name if fix else None,
                                    fix.status if fix else None, fix.cause if fix else None)
        return self.verdict

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _CONVERTER.unstructure(self)
        if self.compile is None:
            del data["compile"]  # "absent: not compiled" (README)
        return data

    @classmethod
    def from_json(cls, data: Any) -> CellResult:
        """A result from its JSON form; raises HarnessError naming the first field that does not fit."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or "status" not in data:
            raise HarnessError(f"not a schema {SCHEMA_VERSION} cell result")
        try:
            return _CONVERTER.structure(data, cls)
        except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
            raise HarnessError(f"not a schema {SCHEMA_VERSION} cell result: {_first_problem(exc)}") from None


@dataclass
class CheckpointNote:
    """The harness's checkpoint was built another way that gives the same model, e.g. "torch.no_grad()" where the
    ref's Model() fails on this torch (harness/worker/checkpoint.py BUILD_WAYS): a note on the checkpoint, not on the
    export."""

    built_with: str = ""


def verdict_line(first_status: str, first_cause: str | None, message: str, fix_name: str | None = None,
                 final_status: str | None = None, final_cause: str | None = None) -> str:
    """The one-line reading shared by exports and compiles: works / works with workaround X / broken: cause.

    Args:
        first_status, first_cause, message: the out-of-the-box attempt.
        fix_name, final_status, final_cause: the workaround rerun, when one ran.
    """
    if first_status == "pass":
        return "works"
    if fix_name and final_status == "pass":
        return f"works with workaround {fix_name} (out of the box: {first_cause or 'unclassified'})"
    if first_status == "skip":
        return f"skipped: {message}"
    if fix_name:
        return (f"broken: {final_cause or 'unclassified'} (with {fix_name}; out of the box: "
                f"{first_cause or 'unclassified'})")
    return f"broken: {first_cause or 'unclassified'}"


def _first_problem(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        notes = cattrs.transform_error(exc)
        return notes[0] if notes else str(exc)
    return str(exc)


def _is_list_type(annotation: Any) -> bool:
    origin: Any = get_origin(annotation)
    return origin is list


def _converter() -> cattrs.Converter:
    """cattrs does the nesting; these hooks make it strict about shapes (an object where an object belongs, a list
    where a list does: cattrs alone would read the string "lots" as a list of four default records)."""
    converter = cattrs.Converter()
    # Parity.passed is "pass" in JSON (a Python keyword).
    converter.register_unstructure_hook(Parity, make_dict_unstructure_fn(Parity, converter,
                                                                          passed=override(rename="pass")))
    parity_in = make_dict_structure_fn(Parity, converter, passed=override(rename="pass"))

    def record(cls: Any) -> Callable[[Any, Any], Any]:
        structure = parity_in if cls is Parity else make_dict_structure_fn(cls, converter)

        def hook(data: Any, _: Any) -> Any:
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
            if cls is CompileSection and data.get("status") == "skipped":
                data = {**data, "status": "skip"}  # what the compile check wrote before statuses were one Literal
            return structure(data, cls)

        return hook

    def strict_list(cls: Any) -> Callable[[Any, Any], Any]:
        item = get_args(cls)[0] if get_args(cls) else Any

        def hook(data: Any, _: Any) -> Any:
            if not isinstance(data, list):
                raise TypeError(f"expected a JSON list, got {type(data).__name__}")
            return [converter.structure(x, item) for x in data]

        return hook

    converter.register_structure_hook_factory(dataclasses.is_dataclass, record)
    converter.register_structure_hook_factory(_is_list_type, strict_list)
    return converter


_CONVERTER = _converter()
T = TypeVar("T")


def to_json(obj: Any) -> Any:
    """Any schema object (or list of them) as plain JSON data."""
    return _CONVERTER.unstructure(obj)


def from_json(data: Any, cls: type[T]) -> T:
    return _CONVERTER.structure(data, cls)


# --------------------------------------------------------------------------------------------------------------
# Files: one JSON per cell under <reports>/results/, written atomically, read back tolerantly.


def results_dir(reports: Path) -> Path:
    return reports / "results"


def result_path(reports: Path, cell_id: str) -> Path:
    return results_dir(reports) / f"{cell_id}.json"


def save_result(reports: Path, result: CellResult) -> Path:
    """Write one cell's result atomically; a disk that is full, read-only or gone is one HarnessError line.

    The previous result of the cell, and every other file, stay as they were: the new one is complete or absent.
    """
    path = result_path(reports, result.cell)
    try:
        write_json(path, result.to_json())
    except OSError as exc:
        raise HarnessError(f"results: cannot write {path}: {exc.strerror or exc} — free space there or pass "
                           f"--reports a writable directory, then rerun (results already written are kept)") from None
    return path


def read_result(path: Path) -> CellResult | None:
    """One result, or None (with a warning naming the file) when it is not a readable result."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"warning: skipping {path}: not a readable result ({exc})", file=sys.stderr)
        return None
    try:
        return CellResult.from_json(data)
    except HarnessError as exc:
        print(f"warning: skipping {path}: {exc}", file=sys.stderr)
        return None


def load_results(reports: Path) -> list[CellResult]:
    """Every readable result under ``reports``/results, sorted by cell id."""
    found = [read_result(p) for p in sorted(results_dir(reports).glob("*.json"))]
    return [r for r in found if r is not None]


def find_results_dirs(root: Path) -> list[Path]:
    """Every ``results`` directory under ``root`` (``root`` itself included), e.g. one per downloaded CI artifact.
    Hidden folders below ``root`` are the harness's own working results (bisect probes: ``.upgrade/``), not cells
    of the matrix, and are left out."""
    found = [root] if root.name == "results" and root.is_dir() else []
    found += [p for p in root.rglob("results")
              if p.is_dir() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(set(found))


def merge_results(roots: list[Path]) -> list[CellResult]:
    """The results under every ``results`` directory below ``roots``, one per cell, sorted by cell id.

    Shards write disjoint cells; when a cell shows up twice (a rerun, an overlapping artifact) the most recently
    created result wins, and a warning names it, so a stale copy never hides a newer verdict.
    """
    folders: dict[Path, None] = {}  # ordered and without repeats, also when roots overlap
    for root in roots:
        if not root.is_dir():
            raise HarnessError(f"{root}: no such directory — pass a reports directory written by `harness run`")
        folders.update(dict.fromkeys(f.resolve() for f in find_results_dirs(root)))
    chosen: dict[str, CellResult] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            result = read_result(path)
            if result is None:
                continue
            cell = result.cell or path.stem
            other = chosen.get(cell)
            if other is not None:
                print(f"warning: {cell} appears more than once; keeping the newer result", file=sys.stderr)
                if other.created > result.created:
                    continue
            chosen[cell] = result
    return [chosen[c] for c in sorted(chosen)]


# --------------------------------------------------------------------------------------------------------------
# The schema as the README shows it.


def schema_table() -> dict[str, list[str]]:
    """Field names per record, as written to JSON: what README's "Result schema" documents."""
    def names(cls: type) -> list[str]:
        renamed = {"passed": "pass"}
        return [renamed.get(f.name, f.name) for f in dataclasses.fields(cls)]

    return {cls.__name__: names(cls) for cls in (CellResult, Attempt, WorkaroundRecord, EarlierAttempt, ExportFacts,
                                                 OnnxFacts, Output, Parity, DetectInfo, CompileSection)}
