"""Shards: `--shard K/N` splits the plan the same way everywhere, and merged shards equal one unsharded run."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_RUN_REFS, SMALL_RUN_VARIANTS, SmallRun

from harness.errors import ConfigError, HarnessError
from harness.files import write_json
from harness.results import model as results
from harness.results.model import Attempt, CellResult
from harness.run.plan import Cell
from harness.run.shard import parse_shard, select

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
                   {"schema": results.SCHEMA_VERSION, "cell": "c", "attempts": [{"status": "pass"}],
                    "created": created})
    assert [r.created for r in results.merge_results([tmp_path / "two", tmp_path / "one"])] == [2.0]
    assert len(results.merge_results([tmp_path])) == 1  # results/ folders found below the root
    # Overlapping roots read each folder once (no duplicate warning for the same file).
    assert len(results.merge_results([tmp_path, tmp_path / "one", tmp_path / "one" / "results"])) == 1
    with pytest.raises(HarnessError, match="no such directory"):
        results.merge_results([tmp_path / "absent"])


# What the report and the gate read of a result. Other fields differ between any two runs of one cell (when it was
# made, timings, the work folder of its reports folder, exporter seconds and log lines).
COMPARED = ("cell", "ref", "commit", "source", "standin", "env", "pins", "model", "variant", "format", "outcome",
            "judgement", "verdict", "decided", "inputs_key")


def comparable(found: list[CellResult]) -> dict[str, dict]:
    def attempt(a: Attempt) -> dict:
        return {"name": a.name, "status": a.status, "stage": a.stage, "cause": a.cause,
                "outputs": results.to_json(a.outputs), "expected_outputs": a.expected_outputs,
                "parity": [(p.case, p.output, p.passed) for p in a.parity]}

    return {r.cell: {**{k: r.to_json().get(k) for k in COMPARED}, "attempts": [attempt(a) for a in r.attempts]}
            for r in found}


@pytest.mark.torch
@pytest.mark.slow
def test_shards_merged_equal_one_unsharded_run(small_run: SmallRun, tmp_path: Path) -> None:
    """Real exports on the tests' repository (v6.1 and v7.0, variants native and 3, TorchScript): the unsharded run
    is the shared `small_run`; two shards of it, run into two folders and merged, give the same results."""
    for k in (1, 2):
        small_run.run(tmp_path / f"shard{k}", "--shard", f"{k}/2")
    whole = results.load_results(small_run.reports)
    shards = [results.load_results(tmp_path / f"shard{k}") for k in (1, 2)]
    assert len(whole) == len(SMALL_RUN_REFS) * len(SMALL_RUN_VARIANTS) == 4
    assert [[r.ref for r in s] for s in shards] == [["v6.1", "v6.1"], ["v7.0", "v7.0"]]  # sorted ids, cut in two
    assert all(r.outcome() in ("works", "workaround") for r in whole), [r.verdict for r in whole]
    assert {r.commit for r in whole} == {small_run.source.tags[ref] for ref in SMALL_RUN_REFS}
    merged = results.merge_results([tmp_path / f"shard{k}" for k in (1, 2)])
    assert comparable(merged) == comparable(whole)
