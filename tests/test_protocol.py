"""The wire types of harness/worker/protocol.py against what the env-side code really sends.

Both sides are typed with these TypedDicts, but the env side writes JSON that mypy never sees: a key added, renamed
or given another type on one side would only show as a KeyError in a run. Here a real worker in the quick env answers
a probe, builds a checkpoint and runs one export + verify, and every answer and progress event is checked against
its type: required keys present, no key the type does not declare, each value of the declared type.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from harness.worker import protocol


def problems(value: Any, hint: Any, where: str = "") -> list[str]:
    """Where ``value`` (decoded JSON) does not fit the type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return []
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where or 'answer'}: {type(value).__name__}, not an object"]
        fields = typing.get_type_hints(hint)
        found = [f"{where}.{key}: missing" for key in sorted(hint.__required_keys__ - set(value))]
        found += [f"{where}.{key}: not in {hint.__name__}" for key in sorted(set(value) - set(fields))]
        for key in set(value) & set(fields):
            found += problems(value[key], fields[key], f"{where}.{key}")
        return found
    if origin in (typing.Union, types.UnionType):
        return (
            [] if any(not problems(value, arg, where) for arg in args) else [f"{where}: {value!r} fits none of {args}"]
        )
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        return [p for k, item in value.items() for p in problems(item, args[1], f"{where}[{k!r}]")]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r}, not null"]
    if hint is float:
        return (
            []
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else [f"{where}: {value!r}, not a number"]
        )
    if hint is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: {value!r}, not an int"]
    return [] if isinstance(value, hint) else [f"{where}: {value!r}, not {hint.__name__}"]


def test_the_checker_catches_each_kind_of_drift() -> None:
    """The checker itself: a missing key, an undeclared one, a wrong type, a wrong literal, deep inside lists."""
    good = {"ok": True, "stage": "run", "outputs": [{"output": "out0", "shape": [1, 3], "cosine": 1.0}]}
    assert problems(good, protocol.TargetAnswer) == []
    assert problems({**good, "stage": "deploy"}, protocol.TargetAnswer) == [
        ".stage: 'deploy' fits none of (typing.Literal['build', 'run', 'reference'], <class 'NoneType'>)"
    ]
    assert problems({**good, "extra": 1}, protocol.TargetAnswer) == [".extra: not in TargetAnswer"]
    bad_rows = {**good, "outputs": [{"output": "out0", "shape": ["1"]}]}
    assert problems(bad_rows, protocol.TargetAnswer) == [".outputs[0].shape[0]: '1', not an int"]
    assert problems({"event": "stage", "cell": "c"}, protocol.StageEvent) == [".stage: missing"]


@pytest.mark.torch
def test_a_real_worker_speaks_the_protocol(yolov5_source, env_python: Path, tmp_path: Path) -> None:
    from harness.axes import FORMATS
    from harness.envs import proc
    from harness.paths import cache_dir
    from harness.run import exporters
    from harness.sources.checkout import get_checkout

    tree = get_checkout(yolov5_source.repo, "v7.0", cache=cache_dir()).path

    probe: protocol.ProbeJob = {"task": "probe", "yolov5_config_dir": str(tmp_path / "config")}
    answer, ran = proc.run_worker(env_python, probe, workdir=tmp_path / "probe", watch=proc.Watch(300))
    assert answer is not None, ran.tail()
    assert problems(answer, protocol.ProbeAnswer) == [] and answer["ok"], answer

    weights = tmp_path / "yolov5n.pt"
    build: protocol.CheckpointJob = {
        "task": "checkpoint",
        "tree": str(tree),
        "cfg": "yolov5n.yaml",
        "nc": 80,
        "seed": 0,
        "weights_out": str(weights),
    }
    answer, ran = proc.run_worker(env_python, build, workdir=tmp_path / "build", watch=proc.Watch(600))
    assert answer is not None, ran.tail()
    assert problems(answer, protocol.CheckpointAnswer) == [] and answer["ok"], answer

    workdir = tmp_path / "cell"
    workdir.mkdir()
    (workdir / "weights.pt").symlink_to(weights)
    shape = exporters.detect_exporter(tree, "v7.0")
    cell: protocol.CellSpec = {
        "id": "v7.0-native-onnx",
        "variant": "native",
        "format": "onnx",
        "workdir": str(workdir),
        "argv": exporters.command(shape, tree, "weights.pt", 160, "onnx"),
        "suffixes": list(FORMATS["onnx"].suffixes),
        "opset_requested": exporters.requested_opset(shape, tree),
    }
    progress = tmp_path / "progress.jsonl"
    job: protocol.AttemptJob = {
        "task": "attempt",
        "tree": str(tree),
        "weights": str(weights),
        "imgsz": 160,
        "atol": 1e-3,
        "rtol": 1e-3,
        "progress": str(progress),
        "shims": ["onnx-dynamo-off"],  # torch 2.14: the workarounds v7.0 needs, to reach verify
        "threads": 1,
        "cells": [cell],
    }
    answer, ran = proc.run_worker(env_python, job, workdir=tmp_path / "attempt", watch=proc.Watch(900),
                                  env_extra={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert answer is not None, ran.tail()
    assert problems(answer, protocol.AttemptAnswer) == [] and answer["ok"], answer
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    stages = [e for e in events if e["event"] == "stage"]
    cells = [e for e in events if e["event"] == "cell"]
    assert [e["stage"] for e in stages][:2] == ["export", "load"] and len(cells) == 1, events
    assert [p for e in stages for p in problems(e, protocol.StageEvent)] == []
    assert problems(cells[0], protocol.CellEvent) == [], cells[0]
    assert "verify" in cells[0] and cells[0]["verify"]["cases"][0]["name"] == "main", cells[0]
