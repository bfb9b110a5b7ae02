"""The regression gate: exit 1 on a real regression (a branch moved to a tree whose native export has another output
signature), 0 on an unchanged rerun; refuses to compare a stand-in with upstream code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
from conftest import Yolov5Source

from harness import gate, results
from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.source import open_repo

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline written by the CLI from the committed real results."""
    path = tmp_path_factory.mktemp("gate") / "baseline.json"
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(path), "--write-baseline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gate: baseline of 12 cells written to {path}"
    return path


def test_same_results_pass(baseline: Path) -> None:
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(baseline))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failing change(s), 0 other" in proc.stdout


def test_upgrading_v6_1_to_v6_2_changes_the_native_signature(baseline: Path) -> None:
    # Read the baseline's v6.1 cells as if they were today's v6.2 ones: what `--ref v6.1=v6.2` is for.
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(baseline), "--ref", "v6.1=v6.2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert [r[:6] for r in rows] == [
        ["FAIL", "signature", "v6.2", "py311-torch2.14", "native", "onnx"],
        ["FAIL", "signature", "v6.2", "py311-torch2.14", "native", "torchscript"]]
    assert "4 outputs: output 1x25200x85, clone 1x3x80x80x8" in proc.stdout
    assert "1 output: output 1x25200x85" in proc.stdout
    # v6.1's variant 1 onnx has no v6.2 counterpart in the data and vice versa: listed, not failing.
    assert " missing " in proc.stdout and " new " in proc.stdout


def test_regressions_and_parity_fail_fixes_pass() -> None:
    found = results.merge_results([DATA])
    good = next(r for r in found if r["cell"] == "v6.1__py311-torch2.14__native__onnx")
    base = {"cells": {good["cell"]: gate.summarize(good)}}
    broken = json.loads(json.dumps(good))
    broken["workaround"]["status"], broken["workaround"]["parity"][0]["pass"] = "fail", False
    kinds = {c.kind for c in gate.compare(base, [broken])}
    assert kinds == {"regression", "parity"} and all(c.fails for c in gate.compare(base, [broken]))
    fixed = gate.compare({"cells": {good["cell"]: gate.summarize(broken)}}, [good])
    assert [(c.kind, c.fails) for c in fixed] == [("fixed", False)]


def test_stand_in_versus_upstream_is_refused_unless_allowed() -> None:
    found = results.merge_results([DATA])
    standin = next(r for r in found if r["cell"] == "v7.0__py311-torch2.14__native__onnx")
    upstream = {**standin, "standin": None, "source": "https://github.com/ultralytics/yolov5.git"}
    base = {"cells": {standin["cell"]: gate.summarize(standin)}}
    with pytest.raises(HarnessError, match="ran a PyPI stand-in in the baseline .* but the upstream repository now"):
        gate.compare(base, [upstream])
    assert gate.compare(base, [upstream], allow_source_change=True) == []


def test_bad_baselines_are_one_line_errors(tmp_path: Path) -> None:
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and proc.stderr.strip().endswith("save one first with --write-baseline")
    (tmp_path / "other.json").write_text("[]")
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(tmp_path / "other.json"))
    assert proc.returncode == 2 and "is not a baseline file" in proc.stderr
    proc = harness("gate", "--reports", str(DATA), "--baseline", str(tmp_path / "other.json"), "--ref", "v6.1")
    assert proc.returncode == 2


@pytest.mark.torch
@pytest.mark.slow
def test_gate_on_a_real_upgrade(yolov5_source: Yolov5Source, make_config, quick_env: str, env_python: Path,
                                tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A deploy branch on v6.1's tree gets a commit with v6.2's tree: the native TorchScript export goes from 4
    outputs to 1, so the gate fails; an unchanged rerun passes. Two real exports of yolov5n at 160, on the tests'
    repository (`yolov5_source`), shipped the air-gapped way: the fork is a git bundle at a path with a space, and the
    upgrade arrives as a new bundle dropped in its place."""
    repo = git.Repo.clone_from(yolov5_source.repo, tmp_path / "fork.git", bare=True)
    repo.git.branch("deploy", "refs/tags/v6.1")
    bundle = tmp_path / "air gapped" / "fork.bundle"
    bundle.parent.mkdir()
    repo.git.bundle("create", str(bundle), "--all")
    config = make_config(["deploy"], small=True)
    base = tmp_path / "baseline.json"
    # torch>=2.6's weights_only default relaxed up front: one attempt per cell (the gate reads either attempt).
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}

    def run(reports: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config),
                               "--repo", str(bundle), "--variants", "native", "--formats", "torchscript",
                               "--reports", str(reports)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900, check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # This session's bundle gets its own clone in the shared cache: removed at the end (the upstream history is 18 MB).
    request.addfinalizer(lambda: shutil.rmtree(open_repo(str(bundle), cache=cache_dir()).git_dir, ignore_errors=True))
    run(tmp_path / "before")
    [before] = results.load_results(tmp_path / "before")
    assert results.outcome(before) in gate.WORKING and len(results.signature(before)) == 4, before["verdict"]
    assert before["commit"] == yolov5_source.tags["v6.1"]
    # The bundle's code is upstream's (or the stand-in's, on a clone without ../shared): the source says which.
    if yolov5_source.kind == "stand-in":
        assert before["source"].startswith("pypi:yolov5==") and before["standin"]["stands_in_for"] == "v6.1"
    else:
        assert before["source"] == f"bundle:{bundle}" and before["standin"] is None
    assert harness("gate", "--reports", str(tmp_path / "before"), "--baseline", str(base),
                   "--write-baseline").returncode == 0

    run(tmp_path / "before")  # unchanged inputs: the result is kept, and the gate passes
    same = harness("gate", "--reports", str(tmp_path / "before"), "--baseline", str(base))
    assert same.returncode == 0, same.stdout + same.stderr

    tree = repo.git.rev_parse("refs/tags/v6.2^{tree}")
    # Fixed names and dates: the same commit every session, so its checkout and checkpoint stay cached.
    upgrade = repo.git.commit_tree(tree, "-p", "deploy", "-m", "deploy: move to v6.2",
                                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                                        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
                                        "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"})
    repo.git.update_ref("refs/heads/deploy", upgrade)
    bundle.unlink()
    repo.git.bundle("create", str(bundle), "--all")  # the next delivery replaces the file
    run(tmp_path / "after")
    [after] = results.load_results(tmp_path / "after")
    assert after["commit"] == upgrade and len(results.signature(after)) == 1
    changed = harness("gate", "--reports", str(tmp_path / "after"), "--baseline", str(base))
    assert changed.returncode == 1, changed.stdout + changed.stderr
    [row] = [line for line in changed.stdout.splitlines() if line.startswith("FAIL")]
    assert row.split()[:6] == ["FAIL", "signature", "deploy", quick_env, "native", "torchscript"]
    assert "4 outputs: - 1x1575x85, - 1x3x20x20x85" in row and "1 output: - 1x1575x85" in row  # yolov5n at 160
