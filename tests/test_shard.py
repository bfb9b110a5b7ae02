"""Shards: `--shard K/N` splits the plan the same way everywhere, and merged shards equal one unsharded run."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness import results
from harness.files import write_json
from harness.results import CellResult
from harness.config import Cell
from harness.errors import ConfigError, HarnessError
from harness.shard import parse_shard, select

ROOT = Path(__file__).resolve().parent.parent


def cells(refs=("v5.0", "v6.1", "v7.0"), envs=("e1", "e2")) -> list[Cell]:
    return [Cell(r, e, v, f) for r in refs for e in envs for v in ("native", "1", "3", "4")
            for f in ("onnx", "onnx-dynamic", "torchscript")]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 72, 100])
def test_shards_partition_the_plan_evenly(n: int) -> None:
    plan = cells()
    shards = [select(plan, (k, n)) for k in range(1, n + 1)]
    ids = [c.id for shard in shards for c in shard]
    assert sorted(ids) == sorted(c.id for c in plan) and len(set(ids)) == len(ids)  # every cell exactly once
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    for shard in shards:  # the plan's order is kept inside a shard
        assert shard == [c for c in plan if c in shard]


def test_the_split_does_not_depend_on_plan_order() -> None:
    plan = cells()
    shuffled = plan[:]
    random.Random(4).shuffle(shuffled)
    for k in (1, 2, 3):
        assert {c.id for c in select(plan, (k, 3))} == {c.id for c in select(shuffled, (k, 3))}


def test_shards_keep_batches_together() -> None:
    # Contiguous blocks of sorted ids: the three formats of one ref x env x variant land in one shard, except at
    # most at the N-1 block boundaries.
    plan = cells()
    n = 4
    split_batches = 0
    for key in {(c.ref, c.env, c.variant) for c in plan}:
        owners = {k for k in range(1, n + 1) for c in select(plan, (k, n)) if (c.ref, c.env, c.variant) == key}
        split_batches += len(owners) > 1
    assert split_batches <= n - 1


def test_the_split_is_pinned() -> None:
    # Machines must agree: the assignment is a pure function of the ids. Pin one so a change is deliberate.
    plan = [Cell("v6.1", "e", v, "onnx") for v in ("native", "1", "3", "4")]
    assert [c.variant for c in select(plan, (1, 2))] == ["1", "3"]  # sorted ids: 1, 3, 4, native
    assert [c.variant for c in select(plan, (2, 2))] == ["native", "4"]
    assert select(plan, None) == plan


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2", ""])
def test_bad_shard_specs_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--shard .*(expected K/N|K must be between)"):
        parse_shard(text)
    assert parse_shard(" 2/3 ") == (2, 3)


def test_bad_shard_on_the_command_line(quick_env: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--shard", "3/2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --shard '3/2': K must be between 1 and N (N >= 1), e.g. --shard 1/2"


def test_merge_keeps_the_newest_duplicate_and_refuses_a_missing_dir(tmp_path: Path) -> None:
    for name, created in (("one", 1.0), ("two", 2.0)):
        write_json(results.result_path(tmp_path / name, "c"),
                   {"schema": results.SCHEMA_VERSION, "cell": "c", "status": "pass", "created": created})
    assert [r.created for r in results.merge_results([tmp_path / "two", tmp_path / "one"])] == [2.0]
    assert len(results.merge_results([tmp_path])) == 1  # results/ folders found below the root
    # Overlapping roots read each folder once (no duplicate warning for the same file).
    assert len(results.merge_results([tmp_path, tmp_path / "one", tmp_path / "one" / "results"])) == 1
    with pytest.raises(HarnessError, match="no such directory"):
        results.merge_results([tmp_path / "absent"])


# Fields that differ between any two runs of the same cell.
VOLATILE = ("created", "timings")


def comparable(found: list[CellResult]) -> dict[str, dict]:
    return {r.cell: {k: v for k, v in r.to_json().items() if k not in VOLATILE} for r in found}


@pytest.mark.torch
def test_two_shards_merged_equal_one_unsharded_run(failing_repo: Path, make_config, quick_env: str,
                                                   small_weights: Path, tmp_path: Path) -> None:
    # Real runs of cheap cells: with `weights` set there is no checkpoint worker, and these trees stop before any
    # export, so each run costs one env probe (the weights are never loaded).
    config = make_config(["a", "b"], weights=small_weights)

    def run(reports: Path, *extra: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config),
                               "--repo", str(failing_repo), "--variants", "native,1,3", "--formats",
                               "onnx,torchscript", "--reports", str(reports), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]

    run(tmp_path / "all")
    run(tmp_path / "shard1", "--shard", "1/2")
    run(tmp_path / "shard2", "--shard", "2/2")
    whole = results.load_results(tmp_path / "all")
    one, two = results.load_results(tmp_path / "shard1"), results.load_results(tmp_path / "shard2")
    assert len(whole) == 12 and len(one) == len(two) == 6
    # Patched variants stop at the patch; native is not patched and stops when no export script is found.
    assert {(r.variant == "native", r.stage) for r in whole} == {(False, "patch"), (True, "export")}
    assert comparable(results.merge_results([tmp_path / "shard1", tmp_path / "shard2"])) == comparable(whole)
