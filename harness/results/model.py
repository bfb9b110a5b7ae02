"""The cell result: one typed definition, its JSON form, and the files that hold it.

Every producer (the supervisor, the compile check) builds these classes and every reader (report, gate, upgrade,
JUnit, benchmark) reads them; nothing else spells out a result's keys. A field is added here, once, with a default,
so older files still load. The JSON is the public contract (docs/schema.md is generated from ``schema_markdown()``
and checked by a test): ``to_json`` / ``from_json`` convert, with cattrs doing the nesting.

A cell holds its ``attempts`` (out of the box first, then each workaround tried) and ``decided``, the index of the one
its verdict is about (``Attempts``: the same shape serves any judged thing). ``outcome``, ``judgement`` (the
verdict as a value, harness/results/verdict.py) and ``verdict`` (its line) are derived from them.

``SCHEMA_VERSION`` changes when a key changes meaning; a schema 1 file is migrated on read (``migrate_v1``), a file
of any other version is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args, get_origin

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from harness import prog
from harness.errors import HarnessError
from harness.files import write_json
from harness.results.verdict import Judged, Outcome, Verdict, decide

SCHEMA_VERSION = 2
Status = Literal["pass", "fail", "error", "skip"]
# Where an attempt stopped. Export: checkout -> patch -> checkpoint -> export -> load -> run -> compare; the compile
# check (tpu-mlir) has its own transform -> deploy -> compare.
Stage = Literal["checkout", "patch", "checkpoint", "export", "load", "run", "compare", "transform", "deploy",
                "build", "reference"]
STATUSES: tuple[str, ...] = get_args(Status)


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
    # The highest tensor rank in the graph (ONNX shape inference over every value): many NPUs take nothing above 4,
    # which the npu variant keeps to and variant 3's (bs, na, ny, nx, no) levels do not. None: inference failed.
    max_rank: int | None = None


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


class NamedAttempt(Judged, Protocol):
    """An attempt in a run of attempts: out of the box (``name`` empty), or with the workaround ``name``."""

    @property
    def name(self) -> str: ...


A = TypeVar("A", bound=NamedAttempt)


class Attempts(Generic[A]):
    """The shape every judged thing shares (a cell's export, a downstream target's compile): ``attempts`` in the
    order they ran, out of the box first, then each workaround tried; ``decided``, the index of the one that decides
    the verdict. A subclass (a dataclass) declares both as fields with its own attempt type; these readings derive
    everything else, so nothing is stored twice and no reader indexes the list."""

    attempts: list[A]
    decided: int

    @property
    def first(self) -> A:
        """The out-of-the-box attempt."""
        return self.attempts[0]

    @property
    def deciding(self) -> A:
        """The attempt the verdict is about: the first, or the workaround rerun that decided."""
        return self.attempts[self.decided]

    @property
    def reruns(self) -> list[A]:
        """The workaround attempts, in the order they ran."""
        return self.attempts[1:]

    @property
    def judgement(self) -> Verdict:
        """The verdict, as a value."""
        deciding = self.deciding
        return decide(self.first, deciding, deciding.name if deciding is not self.first else None)

    @property
    def verdict(self) -> str:
        """The verdict's line, for people (``str(self.judgement)``)."""
        return self.judgement.line()

    def outcome(self) -> Outcome:
        """works, workaround, broken, error or skipped: see Verdict."""
        return self.judgement.outcome

    def record(self, attempt: A) -> A:
        """Add a workaround attempt; it decides now. A chain that ran before (the same name) decides again in its
        place instead of running twice in the list."""
        for i, old in enumerate(self.attempts[1:], start=1):
            if old.name == attempt.name:
                self.attempts[i] = attempt
                self.decided = i
                return attempt
        self.attempts.append(attempt)
        self.decided = len(self.attempts) - 1
        return attempt


@dataclass
class Attempt:
    """One run of a cell's export + verify: out of the box (``name`` empty), or with a workaround
    (harness/verify/causes.py)
    and what that workaround changed."""

    name: str = ""  # the workaround chain, e.g. "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False"; "" out of the box
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
    # What a workaround changed (empty out of the box):
    env: dict[str, str] = field(default_factory=dict)
    shims: list[str] = field(default_factory=list)
    opset: int | None = None
    pins: dict[str, str] = field(default_factory=dict)
    patch_form: str | None = None  # "adapted": the patch table's form of the variant instead of the guide's line
    patch_diff: str | None = None  # that form's diff of models/yolo.py
    hint: str = ""
    learned_from: str | None = None  # the cell whose step-by-step search found this chain (borrowed whole)
    not_tried: list[str] | None = None  # the intermediate steps a borrowed chain skipped
    # The cause each of those steps stopped at where the chain was found: why the next fix is in the chain.
    not_tried_met: list[str | None] | None = None

    def seconds(self, shared_export: bool = True) -> float:
        """Time this attempt took; without an export another cell ran for it when ``shared_export`` is False."""
        skip_export = not shared_export and self.export is not None and self.export.shared_with is not None
        return sum(v for k, v in self.timings.items() if not (skip_export and k == "export"))


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

    @property
    def judgement(self) -> Verdict:
        """The verdict as a value: ``status``/``cause`` are the deciding attempt's, ``out_of_the_box`` the first
        attempt's when a workaround reran it."""
        first = self.out_of_the_box or self
        return decide(first, self, (self.workaround or {}).get("name"))

    def refresh_verdict(self) -> str:
        """Set and return the verdict's line."""
        self.verdict = self.judgement.line()
        return self.verdict


@dataclass
class OutputMatch:
    """One output of a downstream target's compiled model against the reference runtime on the same input."""

    output: str = ""  # the reference's name (ONNX), or its position (TorchScript: "0", "1", ...)
    shape: list[int] = field(default_factory=list)  # the reference's
    target_shape: list[int] = field(default_factory=list)
    cosine: float | None = None
    max_abs: float | None = None
    error: str | None = None  # "missing", "shape mismatch": no numbers then


@dataclass
class TargetAttempt:
    """One compile-and-run of a cell's artifact on a downstream target (harness/targets/): out of the box (``name``
    empty) or with a workaround."""

    name: str = ""
    status: Status = "error"
    stage: Stage | None = "build"
    cause: str | None = None
    message: str = ""
    log_tail: str = ""
    outputs: list[OutputMatch] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    artifact: str | None = None  # the compiled file (model.rknn, model.xml, model.ncnn.param)
    hint: str = ""
    # The decode + NMS of the target's raw per-level outputs against the reference's (harness/targets/envside.py
    # decode_agreement): boxes kept and matched per level; None when the cell's outputs hold no raw level.
    decode: dict[str, Any] | None = None


@dataclass
class TargetResult(Attempts[TargetAttempt]):
    """A downstream target's check of one cell: compile the cell's artifact with the target's toolkit, run it on the
    cell's input, compare every output with the reference runtime (ONNX Runtime, or TorchScript for ncnn)."""

    target: str = ""  # the [targets.NAME] it ran for
    tool: str = ""  # the toolkit distribution and version, e.g. "rknn-toolkit2 2.5.0"
    artifact: str = ""  # the format it took: onnx or torchscript
    options: dict[str, Any] = field(default_factory=dict)  # platform, precision, ...
    reference: str = ""  # e.g. "onnxruntime 1.26.0"
    versions: dict[str, str] = field(default_factory=dict)  # what the target env imported
    attempts: list[TargetAttempt] = field(default_factory=lambda: [TargetAttempt()])
    decided: int = 0
    inputs_key: str | None = None
    # The bytes it checked (with the toolkit, options and input): a cell whose artifact has the same content reuses
    # this check instead of compiling again, in this run or a later one (harness/targets/check.py).
    content_key: str | None = None
    created: float = 0.0


# Steps a cell waits for that its attempts share (per ref, per ref x variant): timed on the cell, not an attempt.
CELL_STEPS = ("checkout", "patch", "checkpoint")
# Keys of a cell's JSON derived from its attempts: written for readers, recomputed on read.
DERIVED = {"outcome": "Outcome", "judgement": "Verdict", "verdict": "str"}


@dataclass
class CellResult(Attempts[Attempt]):
    """One cell (ref x env x variant x format): its inputs and its attempts, out of the box first."""

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
    # Export options every attempt ran with, chosen rather than needed (harness/verify/causes.py EXPORT_OPTIONS): e.g.
    # "pinned output names" when an upgrade compares pinned names. Empty in the matrix's own cells.
    options: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=lambda: [Attempt()])
    decided: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # the shared steps (CELL_STEPS) the cell waited for
    patch_diff: str = ""
    artifacts_dir: str | None = None
    # False once the cell's exported files were removed by [artifacts] keep (logs stay; harness/run/artifacts.py).
    artifacts_kept: bool = True
    harness_version: str | None = None
    harness_fingerprint: str | None = None
    created: float = 0.0
    inputs_key: str | None = None
    sandbox: str | None = None  # the box env processes ran in (harness/envs/sandbox.py), e.g. "bubblewrap 0.8.0 + ..."
    compile: CompileSection | None = None
    # The downstream targets' checks of this cell's artifact, by [targets.NAME] (harness/targets/); {} when none ran.
    targets: dict[str, TargetResult] = field(default_factory=dict)
    # How the harness built its own checkpoint when not as the ref's train.py does; None: as it does, or the user's.
    checkpoint: CheckpointNote | None = None

    # -- readings --------------------------------------------------------------------------------------------
    def signature(self) -> list[tuple[str | None, list[Any]]]:
        """The exported outputs as (name, shape) pairs, from the deciding attempt: what a compiler config names."""
        return [(o.name, list(o.shape)) for o in self.deciding.outputs]

    def seconds(self) -> float:
        """Every second the cell took: its shared steps and each attempt."""
        return sum(self.timings.values()) + sum(a.seconds() for a in self.attempts)

    # -- JSON ------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _CONVERTER.unstructure(self)
        if self.compile is None:
            del data["compile"]  # "absent: not compiled" (docs/schema.md)
        judged: list[tuple[Attempts[Any], dict[str, Any]]] = [(self, data)]
        judged += [(self.targets[name], data["targets"][name]) for name in self.targets]
        for source, out in judged:
            judgement = source.judgement
            out.update(outcome=judgement.outcome, judgement=_CONVERTER.unstructure(judgement), verdict=judgement.line())
        return data

    @classmethod
    def from_json(cls, data: Any) -> CellResult:
        """A result from its JSON form (schema 1 migrated); raises HarnessError naming the first field that does
        not fit."""
        if isinstance(data, dict) and data.get("schema") == 1 and "status" in data:
            data = migrate_v1(data)
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or not data.get("attempts"):
            raise HarnessError(f"not a schema {SCHEMA_VERSION} (or 1) cell result")
        if isinstance(data.get("targets"), dict):
            data = {**data, "targets": {name: {k: v for k, v in target.items() if k not in DERIVED}
                                        if isinstance(target, dict) else target
                                        for name, target in data["targets"].items()}}
        try:
            result = _CONVERTER.structure({k: v for k, v in data.items() if k not in DERIVED}, cls)
        except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
            raise HarnessError(f"not a schema {SCHEMA_VERSION} cell result: {_first_problem(exc)}") from None
        checked: list[tuple[str, Attempts[Any]]] = [("", result)]
        checked += [(f"targets.{name}: ", target) for name, target in result.targets.items()]
        for what, judged in checked:
            if not 0 <= judged.decided < len(judged.attempts):
                raise HarnessError(f"not a schema {SCHEMA_VERSION} cell result: {what}decided {judged.decided} is not "
                                   f"the index of one of its {len(judged.attempts)} attempts")
        return result


@dataclass
class CheckpointNote:
    """The harness's checkpoint was built another way that gives the same model, e.g. "torch.no_grad()" where the
    ref's Model() fails on this torch (harness/worker/checkpoint.py BUILD_WAYS): a note on the checkpoint, not on the
    export."""

    built_with: str = ""


# The keys of a schema 1 cell that held its out-of-the-box attempt (its rerun sat under "workaround", the reruns
# before that under "workaround.earlier").
V1_ATTEMPT_KEYS = ("status", "stage", "cause", "message", "log_tail", "outputs", "expected_outputs", "parity",
                   "export", "timings", "detect", "image", "shared_from", "decode")


def migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema 1 cell as schema 2: the top-level attempt first, then each earlier rerun, then the last rerun; the
    rerun decides when the first did not pass. The shared steps' timings stay on the cell; the verdict line is
    derived again."""
    cell = {k: v for k, v in data.items() if k not in (*V1_ATTEMPT_KEYS, "workaround", "verdict")}
    first = {k: data[k] for k in V1_ATTEMPT_KEYS if k in data}
    timings = data.get("timings") or {}
    cell["timings"] = {k: v for k, v in timings.items() if k in CELL_STEPS}
    first["timings"] = {k: v for k, v in timings.items() if k not in CELL_STEPS}
    attempts = [first]
    rerun = data.get("workaround")
    if isinstance(rerun, dict):
        attempts += [dict(e) for e in rerun.get("earlier") or []]
        attempts.append({k: v for k, v in rerun.items() if k != "earlier"})
    decided = len(attempts) - 1 if rerun and data.get("status") != "pass" else 0
    return {**cell, "schema": SCHEMA_VERSION, "attempts": attempts, "decided": decided}


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
            raise HarnessError(f"{root}: no such directory — pass a reports directory written by "
                               f"`{prog.command('run')}`")
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
# The schema as docs/schema.md shows it.

SCHEMA_RECORDS: tuple[type, ...] = (CellResult, Attempt, Verdict, ExportFacts, OnnxFacts, Output, Parity, DetectInfo,
                                    CheckpointNote, CompileSection, CompileAttempt, TargetResult, TargetAttempt,
                                    OutputMatch)


def schema_table() -> dict[str, list[str]]:
    """Keys per record, as written to JSON (a cell's derived keys included)."""
    return {cls.__name__: [key for key, _ in _keys(cls)] for cls in SCHEMA_RECORDS}


def _keys(cls: type) -> list[tuple[str, str]]:
    renamed = {"passed": "pass"}
    keys = [(renamed.get(f.name, f.name), str(f.type)) for f in dataclasses.fields(cls)]
    if cls in (CellResult, TargetResult):
        keys += [(key, f"{kind} (derived from the attempts)") for key, kind in DERIVED.items()]
    return keys


def schema_markdown() -> str:
    """The key reference of docs/schema.md: per record its purpose and each key with its type."""
    parts = []
    for cls in SCHEMA_RECORDS:
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        rows = "\n".join(f"| `{key}` | `{kind}` |".replace(" | None", " \\| None") for key, kind in _keys(cls))
        parts.append(f"### {cls.__name__}\n\n{doc}\n\n| key | type |\n| --- | --- |\n{rows}\n")
    return "\n".join(parts)
