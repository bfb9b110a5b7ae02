"""What the harness and the env-side code send each other: one typed definition of every job, event and answer.

Both sides read these types; neither needs them at run time (the wire format is JSON), so env-side modules import
this one under ``typing.TYPE_CHECKING`` only and an env's Python never loads it. The harness writes a job with
``proc.write_job`` (which adds ``out``, where the answer goes); the env side writes the answer there, ``ok`` false
with an ``error`` when the task raised. A worker that never answers is a process result, not an answer.

Keys a task may leave out are in the ``total=False`` half of a type. Syntax stays Python 3.8's (this file is
checked by ruff as 3.8 code and compiled by a real 3.8 in ``nox -s lint``).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# -- harness.worker: probe, checkpoint, attempt -------------------------------------------------------------------


class _Job(TypedDict, total=False):
    out: str  # added by proc.write_job: where the answer goes


class ProbeJob(_Job):
    task: str  # "probe"
    yolov5_config_dir: str


class CheckpointJob(_Job):
    task: str  # "checkpoint"
    tree: str
    cfg: str
    nc: int
    seed: int
    weights_out: str


class CellSpec(TypedDict, total=False):
    """One cell of an attempt job: the ref's export command for one format, run in ``workdir``."""

    id: str
    variant: str
    format: str
    workdir: str
    argv: list[str]
    suffixes: list[str]
    opset_requested: int | None
    artifact: str  # set by the worker once the export wrote it


class _AttemptOptional(_Job, total=False):
    image: str  # the photo to run; default: the ref's own (worker/inputs.py)


class AttemptJob(_AttemptOptional):
    task: str  # "attempt"
    tree: str
    weights: str
    imgsz: int
    atol: float
    rtol: float
    progress: str  # the JSON-lines file the worker streams StageEvent and CellEvent into
    shims: list[str]
    threads: int | None
    cells: list[CellSpec]


class WorkerError(TypedDict, total=False):
    type: str
    message: str
    traceback: str
    stage: str | None  # in a cell event: the stage in flight (load, run, compare)


class ExportRecord(TypedDict):
    exit_code: int
    seconds: float
    workdir: str  # another cell's, when both ran the very same export command
    produced: list[str]


class VerifyCase(TypedDict, total=False):
    name: str  # main, size, batch
    input_shape: list[int]
    eager: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parity: list[dict[str, Any]]  # per output: max_abs, max_rel, cosine, finite, exceeding, min_tolerance
    error: str  # the backend raised on this input


class Verification(TypedDict, total=False):
    timings: dict[str, float]
    detect: dict[str, Any]  # results.DetectInfo's fields
    onnx: dict[str, Any]  # results.OnnxFacts's fields (ONNX formats only)
    image: str
    cases: list[VerifyCase]
    decode: dict[str, Any] | None


class StageEvent(TypedDict):
    event: str  # "stage"
    cell: str
    stage: str


class _CellEventOptional(TypedDict, total=False):
    verify: Verification
    error: WorkerError


class CellEvent(_CellEventOptional):
    event: str  # "cell"
    cell: str
    export: ExportRecord


class Answer(TypedDict, total=False):
    ok: bool
    error: WorkerError


class ProbeAnswer(Answer, total=False):
    versions: dict[str, str | None]


class CheckpointAnswer(Answer, total=False):
    detect: dict[str, Any]  # nl, na, no, nc, stride of the model built
    parameters: int
    built_with: str | None  # how the harness built it when the ref's own way failed (None: the ref's way)


class AttemptAnswer(Answer, total=False):
    cells: int


# -- harness.targets.envside: check ----------------------------------------------------------------------------------


class TargetJob(_Job):
    task: str  # "check"
    target: str  # a key of targets/toolkits.py TOOLKITS
    reference: str  # onnxruntime or torchscript
    artifact: str
    image: str
    photos: str  # the folder of the ref's photos (the image's), which calibrates an INT8 build
    threads: int | None  # intra-op threads of the toolkit and the reference: the cores shared among the checks
    workdir: str
    imgsz: int
    options: dict[str, Any]
    # The cell's decode contract when its outputs hold every level's raw tensor: strides, anchors (pixels), order
    # (the output index of each level), sigmoid_in_graph, quantized (the build is INT8: boxes matched at IoU 0.5).
    decode: dict[str, Any] | None


class OutputRow(TypedDict, total=False):
    output: str
    shape: list[int]
    target_shape: list[int]
    cosine: float | None
    max_abs: float | None
    error: str | None


class TargetAnswer(TypedDict, total=False):
    ok: bool
    stage: Literal["build", "run", "reference"] | None  # where it failed; None when it ran through
    error: str  # one line
    log: str
    compiled: str
    reference: str
    outputs: list[OutputRow]
    decode: dict[str, Any]  # decode_agreement's record: compare_nms's counts, pass, max_abs_px (or an error)
    timings: dict[str, float]
    versions: dict[str, str]
