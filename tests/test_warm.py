"""The warm worker (harness/envs/warm.py + harness/worker/serve.py) on real processes in the quick env's Python.

Each job is a real ``attempt`` whose "export script" is a tiny file in a tmp tree, so the tests run in seconds (the
warm process preloads nothing here) while exercising what the matrix relies on: one warm process serves every job,
each child sees only its own tree, and a crash or an overrun costs one job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.envs import proc
from harness.envs.warm import WarmPool

pytestmark = pytest.mark.torch  # needs the quick env's interpreter (built on first use)

SCRIPT = """
import json, os, sys, time
from models import yolo
mode = sys.argv[1]
if mode == "crash":
    os.kill(os.getpid(), 11)
if mode == "hang":
    time.sleep(120)
json.dump({"name": yolo.NAME, "pid": os.getpid(), "ppid": os.getppid(),
           "env": os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"), "other": os.environ.get("OTHER_VAR"),
           "trees": sorted(k for k in sys.modules if k == "models.yolo")}, open("seen.json", "w"))
"""


def make_tree(root: Path, name: str) -> Path:
    tree = root / name
    (tree / "models").mkdir(parents=True)
    (tree / "models" / "__init__.py").write_text("")
    (tree / "models" / "yolo.py").write_text(f"NAME = {name!r}\n")
    (tree / "export.py").write_text(SCRIPT)
    return tree


def job(tree: Path, workdir: Path, mode: str = "ok") -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    progress = workdir / "progress.jsonl"
    progress.touch()
    cell = {"id": f"{tree.name}-{mode}", "variant": "1", "format": "onnx", "workdir": str(workdir),
            "argv": [str(tree / "export.py"), mode], "suffixes": [".onnx"]}
    return {"task": "attempt", "tree": str(tree), "weights": str(tree / "none.pt"), "imgsz": 64, "atol": 0.1,
            "rtol": 0.1, "progress": str(progress), "shims": [], "cells": [cell]}


def seen(workdir: Path) -> dict:
    return json.loads((workdir / "seen.json").read_text())


@pytest.fixture
def pool(tmp_path: Path):
    pool = WarmPool(tmp_path / "warm", {}, preload=[])
    yield pool
    pool.close()


def test_one_warm_process_serves_every_tree_and_nothing_leaks(pool, env_python: Path, tmp_path: Path) -> None:
    a, b = make_tree(tmp_path, "A"), make_tree(tmp_path, "B")
    views = []
    for tree in (a, b, a):
        workdir = tmp_path / "w" / f"{len(views)}"
        answer, ran = pool.run_worker(env_python, job(tree, workdir), workdir=workdir, watch=proc.Watch(60))
        assert ran.failure() is None and answer and answer["ok"], ran.tail()
        views.append(seen(workdir))
    assert [v["name"] for v in views] == ["A", "B", "A"]  # each child imports its own tree's models.yolo
    assert len({v["ppid"] for v in views}) == 1  # ... forked from one warm process
    assert len({v["pid"] for v in views}) == 3


def test_a_crash_or_an_overrun_costs_one_job(pool, env_python: Path, tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "A")
    crash = tmp_path / "crash"
    _, ran = pool.run_worker(env_python, job(tree, crash, "crash"), workdir=crash, watch=proc.Watch(60))
    assert ran.failure() == "died with signal SIGSEGV"
    hang = tmp_path / "hang"
    start = time.monotonic()
    deadline = start + 2
    _, ran = pool.run_worker(env_python, job(tree, hang, "hang"), workdir=hang,
                             watch=proc.Watch(60, watchdog=lambda: time.monotonic() > deadline))
    assert ran.timed_out and time.monotonic() - start < 30
    events = [json.loads(line) for line in (hang / "progress.jsonl").read_text().splitlines()]
    assert events[-1] == {"event": "stage", "cell": "A-hang", "stage": "export"}  # the harness charges this stage
    after = tmp_path / "after"
    answer, ran = pool.run_worker(env_python, job(tree, after), workdir=after, watch=proc.Watch(60))
    assert ran.failure() is None and answer["ok"]
    assert seen(after)["name"] == "A"


def test_call_time_env_is_set_in_the_child_other_env_gets_its_own_warm_process(pool, env_python: Path,
                                                                                  tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "A")
    views = {}
    for label, extra in (("plain", {}), ("weights", {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}),
                         ("other", {"OTHER_VAR": "x"})):
        workdir = tmp_path / label
        answer, ran = pool.run_worker(env_python, job(tree, workdir), workdir=workdir, watch=proc.Watch(60),
                                      env_extra=extra)
        assert answer and answer["ok"], ran.tail()
        views[label] = seen(workdir)
    assert views["plain"]["env"] is None and views["weights"]["env"] == "1"
    assert views["plain"]["ppid"] == views["weights"]["ppid"]  # read at call time: same warm process
    assert views["other"]["other"] == "x" and views["other"]["ppid"] != views["plain"]["ppid"]
