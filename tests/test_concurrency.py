"""Two runs on one cache and one reports directory at once: locks (harness/envs/lock.py) keep them from building,
patching or writing the same thing together, and a cell one run finished is not redone by the other.

The lock tests use real processes (flock is per open file, dropped by the kernel when its holder dies); the run test
starts two real `python -m harness run` on the same cells at the same time.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import first_attempt, result_files

from harness.envs import lock

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
import sys, time
from pathlib import Path
from harness.envs import lock
with lock.hold(Path(sys.argv[1]), "the test resource"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_another_process(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_waits_and_says_so(tmp_path: Path) -> None:
    path = lock.lock_path(tmp_path, "cells", "f" * 40, "1")
    assert path.parent == tmp_path / "locks"
    other = hold_in_another_process(path, 2.0)
    said: list[str] = []
    start = time.monotonic()
    with lock.hold(path, "v7.0 variant 1", said.append):
        waited = time.monotonic() - start
    other.wait(timeout=10)
    assert waited >= 1.0
    assert said == [f"waiting for another run that holds v7.0 variant 1 (lock {path})"]


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = lock.lock_path(tmp_path, "env", "quick")
    other = hold_in_another_process(path, 600)
    assert lock.is_held(path)
    other.send_signal(signal.SIGKILL)
    other.wait(timeout=10)
    assert not lock.is_held(path)
    start = time.monotonic()
    with lock.hold(path, "env quick"):
        assert time.monotonic() - start < 1.0


def test_two_threads_of_one_run_exclude_each_other(tmp_path: Path) -> None:
    import threading

    path = lock.lock_path(tmp_path, "checkpoint", "x")
    inside, overlaps = [], []

    def work() -> None:
        with lock.hold(path, "x"):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.3)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1]


@pytest.mark.slow
@pytest.mark.torch
def test_two_runs_on_one_cache_and_reports(small_weights: Path, small_matrix, harness_run, mirror_repo: Path,
                                          tmp_path: Path) -> None:
    """Both runs ask for the same two cells at once: every cell is exported once, both runs end well, every result
    file is whole and its artifacts exist."""
    config = small_matrix(tmp_path / "matrix.toml", repo=mirror_repo, refs=["v7.0"], weights=small_weights,
                          variants=("1", "3"))
    reports = tmp_path / "reports"
    argv, env = harness_run(config, reports, "--jobs", "2", "--force")
    runs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [run.communicate(timeout=900) for run in runs]
    for run, (_, err) in zip(runs, outs, strict=True):
        assert run.returncode == 0, err[-3000:]
    stderr = "".join(err for _, err in outs)
    # --force redoes cells in each run, but a cell finished by the other run while this one waited is kept.
    assert stderr.count("done by another run meanwhile") == 2, stderr[-3000:]
    assert "waiting for another run that holds v7.0" in stderr
    found = result_files(reports)
    assert sorted(r["variant"] for r in found) == ["1", "3"]
    for result in found:
        assert result["verdict"].startswith("works"), result["verdict"]  # variant 3 with the adapted tuple(x)
        assert Path(result["artifacts_dir"]).is_dir()
    for path in (reports / "results").iterdir():
        assert not path.name.startswith("."), path  # no temp file left
        json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.torch
def test_runs_into_two_reports_folders_keep_their_own_artifacts(small_weights: Path, small_matrix, harness_run,
                                                                mirror_repo: Path, tmp_path: Path) -> None:
    """A result points at its export; a later run of the same cell on the same cache into another folder must not
    replace that file (it did: cell work dirs were keyed by cell alone, and a tpu-mlir pass found the ONNX gone)."""
    config = small_matrix(tmp_path / "matrix.toml", repo=mirror_repo, refs=["v7.0"], weights=small_weights)

    def run(name: str) -> tuple[dict, Path]:
        argv, env = harness_run(config, tmp_path / name, "--force", "--keep-artifacts", "all")
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        (result,) = result_files(tmp_path / name)
        assert result["verdict"].startswith("works"), result["verdict"]  # variant 3 with the adapted tuple(x)
        export = first_attempt(result)["export"]
        (artifact,) = [f["name"] for f in export["files"] if f["name"].endswith(".torchscript")]
        return result, Path(export["log"]).parent / artifact

    first, first_file = run("a")
    written = first_file.stat().st_mtime_ns
    second, second_file = run("b")
    assert Path(first["artifacts_dir"]) != Path(second["artifacts_dir"])
    assert first_file != second_file and second_file.is_file()
    assert first_file.stat().st_mtime_ns == written  # the first folder's export is untouched
    # Deleting a results folder frees its artifacts at the next run on that cache, and only those.
    shutil.rmtree(tmp_path / "a")
    run("b")
    assert not Path(first["artifacts_dir"]).exists()
    assert Path(second["artifacts_dir"]).is_dir()
