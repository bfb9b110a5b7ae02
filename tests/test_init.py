"""`init` writes a commented starter matrix.toml that the real loader reads, never over an existing file, and a
new user's first run works from it: `init` in an empty folder, then `run --env all` on one real cell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK_ENV, Yolov5Source, result_files

from harness.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def cli(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` from ``cwd`` (a user's folder, not the checkout), as a subprocess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_init_writes_a_commented_starter_the_loader_reads(tmp_path: Path) -> None:
    proc = cli(tmp_path, "init")
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "matrix.toml"
    assert f"wrote {Path('matrix.toml')}" in proc.stdout and "python -m harness run --env all" in proc.stdout
    config = load_config(written)
    assert list(config.envs) == [QUICK_ENV] and config.limits.sandbox == "auto"
    assert config.source.refs and config.variants and config.formats
    comments = [line for line in written.read_text().splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 20  # a commented starter, not a bare one


def test_the_starter_env_is_the_projects_quick_env() -> None:
    """The starter's pins are the ones this project builds and tests (matrix.toml), so they cannot drift apart."""
    starter = load_config(ROOT / "harness" / "starter.toml").envs[QUICK_ENV]
    assert starter == load_config(ROOT / "matrix.toml").envs[QUICK_ENV]


def test_init_never_overwrites(tmp_path: Path) -> None:
    mine = tmp_path / "matrix.toml"
    mine.write_text("# my own config\n")
    proc = cli(tmp_path, "init")
    assert proc.returncode == 2 and mine.read_text() == "# my own config\n"
    assert proc.stderr.strip() == ("error: init: matrix.toml already exists — edit it, or pass --config OTHER.toml "
                                   "to write a new one")
    other = cli(tmp_path, "init", "--config", "other.toml")
    assert other.returncode == 0 and "run --env all --config other.toml" in other.stdout
    assert load_config(tmp_path / "other.toml").envs


def test_init_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    proc = cli(tmp_path, "init", "--config", str(tmp_path / "no" / "such" / "matrix.toml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: init: cannot write") and "No such file or directory" in proc.stderr


@pytest.mark.torch
@pytest.mark.slow
def test_init_then_a_one_cell_run_of_every_env(tmp_path: Path, yolov5_source: Yolov5Source, env_python: Path) -> None:
    """A new user's first minutes: init, edit the model down, add an env this machine cannot build, `run --env all`.
    The env that cannot be built is one error line and exit 2; the other env's cell still runs and is saved."""
    assert cli(tmp_path, "init").returncode == 0
    path = tmp_path / "matrix.toml"
    text = re.sub(r'(?m)^cfg = "yolov5s.yaml"', 'cfg = "yolov5n.yaml"', path.read_text())
    text = re.sub(r"(?m)^imgsz = 640", "imgsz = 160", text)
    text += "\n".join(["", "[envs.nowhere]", 'python = "3.99"', 'torch = "2.14.1"', 'torchvision = "0.29.1"',
                       'onnx = "1.23.2"', 'onnxruntime = "1.32.0"', 'numpy = "2.4.6"', ""])
    path.write_text(text)
    proc = cli(tmp_path, "run", "--env", "all", "--repo", yolov5_source.repo, "--refs", "v7.0", "--variants",
               "native", "--formats", "onnx")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[0].startswith("sandbox: ")  # the run's first line names the box
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith("error: [nowhere] env 'nowhere': no Python 3.99 found"), errors
    assert errors[-1] == ("error: 1 of 2 envs could not run (nowhere): see the error lines above; the other envs' "
                          "results are saved")
    assert f"[{QUICK_ENV}] 1 cells:" in proc.stdout
    (result,) = result_files(tmp_path / "reports")
    assert result["cell"] == f"v7.0__{QUICK_ENV}__native__onnx" and result["model"]["cfg"] == "yolov5n.yaml"
    assert result["outcome"] in ("works", "workaround"), json.dumps(result["judgement"])
    assert result["harness_version"] == __import__("harness").__version__
