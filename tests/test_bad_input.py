"""Bad input gets one line naming the problem and the fix, never a traceback or a half-written file.

Already covered elsewhere (not repeated here): malformed TOML with line and column, unknown keys with "did you mean",
wrong types, empty and unsafe refs in matrix.toml (tests/test_config.py); unknown refs with the closest tags and
unreachable repositories at the source layer (tests/test_source.py); corrupt result files skipped with a warning
(tests/test_results.py). Here: the same failures through `python -m harness run`, and the cases that only the run
meets (weights, interpreters, pins, the results directory, trees that are not YOLOv5 or that the patcher does not
know).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import first_attempt, repo_from_tag, result_files

from harness.errors import ConfigError, HarnessError
from harness.results.model import Attempt, CellResult, result_path, results_dir, save_result
from harness.run.plan import Cell
from harness.run.preflight import check_weights

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The run failed with exit code 2 and one "error: ..." line (no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tiny file system (tmpfs) at ``path``; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- [model] weights that are not a checkpoint: refused before anything runs, and never unpickled here -----------------


@pytest.mark.parametrize(("content", "expected"), [
    (b"just some text\n", "is not a PyTorch checkpoint"),
    (b"PK\x03\x04 a broken zip", "is not a PyTorch checkpoint"),
])
def test_weights_that_are_not_a_checkpoint(tmp_path: Path, small_config_text, content: bytes, expected: str) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(content)
    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text(weights=weights))
    line = one_error_line(cli("run", "--env", "quick", "--config", str(config), "--reports", str(tmp_path / "r")))
    assert f"model.weights {weights} {expected}" in line
    assert "point it at a .pt file saved by torch.save" in line


def test_weights_missing_and_a_zip_without_pickle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.weights .*nothing\.pt not found — point it at"):
        check_weights(str(tmp_path / "nothing.pt"))
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.pt", "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(ConfigError, match="is not a PyTorch checkpoint"):
        check_weights(str(tmp_path / "other.pt"))


def test_weights_are_checked_without_being_unpickled(tmp_path: Path) -> None:
    """A checkpoint-shaped file whose pickle would run code: the harness's check accepts its shape and runs nothing."""
    import pickle
    import zipfile

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # what unpickling would call
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Payload()))
        archive.writestr("evil/version", "3\n")
    with pytest.raises(ConfigError, match="has no YOLOv5 model in it"):  # its pickle names os.system, no model
        check_weights(str(tmp_path / "evil.pt"))
    assert not marker.exists()


@pytest.mark.parametrize(("value", "expected"), [
    ('"2GB"', "'limits.memory_mb' must be an integer, got str '2GB'"),
    ("10", "'limits.memory_mb' must be at least 256, got 10 — write memory_mb = 256"),
])
def test_memory_limit_is_validated(tmp_path: Path, small_config_text, value: str, expected: str) -> None:
    from harness.config import load_config

    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text() + f"\n[limits]\nmemory_mb = {value}\n")
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        load_config(config)
    config.write_text(small_config_text() + "\n[limits]\nmemory_mb = 4000\n")
    assert load_config(config).limits.memory_mb == 4000


# -- envs: a missing interpreter, pins that do not install


def test_env_python_missing_names_the_paths_looked_at(tmp_path: Path, small_config_text) -> None:
    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text(python="3.99"))
    looked = tmp_path / "no" / "python3.99"
    proc = cli("run", "--env", "quick", "--config", str(config), "--reports", str(tmp_path / "r"),
               env={"YOLOV5_MATRIX_PYTHON_3_99": str(looked), "YOLOV5_MATRIX_CACHE": str(tmp_path / "cache")})
    line = one_error_line(proc)
    assert "env 'quick': no Python 3.99 found" in line and str(looked) in line
    assert "pyenv install 3.99" in line


def test_pins_that_do_not_install_name_the_package(tmp_path: Path, small_config_text) -> None:
    """Real uv/pip against the real index: a distribution that does not exist (needs PyPI, like the env builds)."""
    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text(extra=["yem-no-such-distribution-h5==1.0"]))
    proc = cli("run", "--env", "quick", "--config", str(config), "--reports", str(tmp_path / "r"),
               env={"YOLOV5_MATRIX_CACHE": str(tmp_path / "cache")})
    line = one_error_line(proc)
    assert "env 'quick': install failed" in line and "yem-no-such-distribution-h5" in line
    assert "fix the pins in matrix.toml" in line


# -- the results directory: not writable, or full


def test_results_dir_not_writable_fails_before_any_work(tmp_path: Path, small_config_text) -> None:
    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text())
    with tmpfs(tmp_path / "ro", "ro,size=64k") as reports:
        line = one_error_line(cli("run", "--env", "quick", "--config", str(config), "--reports", str(reports)))
    assert f"reports: cannot write to {reports}/results: Read-only file system" in line
    assert "pass --reports a writable directory" in line


def test_disk_full_keeps_the_old_result_and_leaves_no_partial_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "tiny", "size=64k") as reports:
        old = CellResult(cell="v7.0__e__1__onnx", attempts=[Attempt(status="pass", message="old")])
        save_result(reports, old)
        filler = results_dir(reports) / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:  # fill the file system for real, until the kernel says ENOSPC
                os.write(fd, b"\0" * 1024)
        os.close(fd)
        bigger = dataclasses.replace(old.first, message="new", log_tail="x" * 20000)
        new = dataclasses.replace(old, attempts=[bigger])  # a result bigger than what is left
        with pytest.raises(HarnessError) as info:
            save_result(reports, new)
        message = str(info.value)
        assert "No space left on device" in message and "\n" not in message
        assert "free space there or pass --reports a writable directory" in message
        files = sorted(p.name for p in results_dir(reports).iterdir())
        assert files == ["filler", "v7.0__e__1__onnx.json"]  # no temp file left behind
        saved = json.loads(result_path(reports, old.cell).read_text())
        assert first_attempt(saved)["message"] == "old"  # untouched, whole
        assert [first_attempt(r)["message"] for r in result_files(reports)] == ["old"]


# -- refs: validated before they become part of a path


@pytest.mark.parametrize("ref", ["release/v7", "a/b/c", "v7.0-rc1+local", "user@fix", "x_y,z=1"])
def test_valid_refs_make_paths_inside_their_folders(tmp_path: Path, ref: str) -> None:
    cell = Cell(ref=ref, env="quick", variant="1", format="onnx")
    reports, work = tmp_path / "reports", tmp_path / "cache" / "work" / "quick"
    for root, path in ((results_dir(reports), result_path(reports, cell.id)), (work, work / cell.id / "x")):
        assert path.resolve().is_relative_to(root.resolve())
        assert path.resolve().parent in (root.resolve(), (work / cell.id).resolve())  # one level: no '/' survives


@pytest.mark.parametrize("ref", ["../../etc", "/etc/passwd", "a/../../b", "-rf", "a\nb", "~root"])
def test_traversal_refs_never_reach_a_path(tmp_path: Path, small_config_text, ref: str) -> None:
    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text(refs=[ref]))
    line = one_error_line(cli("run", "--env", "quick", "--config", str(config), "--reports", str(tmp_path / "r")))
    assert f"invalid ref {ref!r}" in line
    assert not (tmp_path / "r").exists()  # refused before any directory was made


# -- refs that resolve but cannot be run: per-cell errors, the run goes on


@pytest.fixture(scope="module")
def odd_repo(mirror_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v7.0 stand-in (tag `good`), a branch without models/yolo.py (`not-yolo`), and a branch whose
    Detect.forward ends in a return no row of the patcher's table knows, as releases before v5.0 may (`old-detect`)."""
    path = tmp_path_factory.mktemp("odd") / "repo"
    repo = repo_from_tag(mirror_repo, "v7.0", path)
    repo.create_tag("good")
    repo.git.checkout("-b", "old-detect")
    yolo = path / "models" / "yolo.py"
    text = yolo.read_text()
    old = "return x if self.training else (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)"
    assert old in text
    yolo.write_text(text.replace(old, "return (torch.cat(z, 1), x) if not self.training else x"))
    repo.git.add("-A")
    repo.index.commit("an older Detect.forward shape")
    repo.git.checkout("-b", "not-yolo", "main")
    repo.git.rm("-r", "-q", "models")
    repo.index.commit("not YOLOv5")
    repo.git.checkout("main")
    return path


@pytest.mark.torch
def test_refs_that_cannot_run_are_clear_cells(odd_repo: Path, env_python: Path, small_weights: Path, small_matrix,
                                             harness_run, tmp_path: Path) -> None:
    """One run, no export at all: each ref fails at its own stage with a message that says what to do."""
    config = small_matrix(tmp_path / "matrix.toml", repo=odd_repo, refs=["v9.9", "not-yolo", "old-detect"],
                          weights=small_weights)
    argv, env = harness_run(config, tmp_path / "reports")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = {r["ref"]: r for r in result_files(tmp_path / "reports")}
    results = {ref: {**first_attempt(r), "verdict": r["verdict"], "outcome": r["outcome"]} for ref, r in found.items()}
    unknown = results["v9.9"]
    assert (unknown["status"], unknown["stage"]) == ("error", "checkout")
    assert "unknown ref 'v9.9'" in unknown["message"] and "closest tags: good" in unknown["message"]
    not_yolo = results["not-yolo"]
    assert (not_yolo["stage"], not_yolo["cause"]) == ("checkout", "not YOLOv5")
    assert "has no models/yolo.py: not a YOLOv5 tree — point [source] repo" in not_yolo["message"]
    old = results["old-detect"]
    assert (old["status"], old["stage"]) == ("error", "patch")
    assert ("Detect.forward at old-detect ends in `return (torch.cat(z, 1), x) if not self.training else x` (line"
            in old["message"]) and "— unsupported: add this" in old["message"]
    assert (old["cause"], old["verdict"]) == ("unsupported", "error: unsupported")
    # A stage that could not finish reads "error" in the JSON's outcome and the verdict alike.
    assert {r["outcome"] for r in results.values()} == {"error"}


@pytest.mark.torch
def test_unreachable_repo_with_fallback_error_is_one_line(env_python: Path, small_weights: Path, small_matrix,
                                                          harness_run, tmp_path: Path) -> None:
    config = small_matrix(tmp_path / "matrix.toml", repo=tmp_path / "x", refs=["v7.0"], weights=small_weights)
    text = config.read_text().replace(f'repo = "{tmp_path / "x"}"', 'repo = "https://127.0.0.1:9/nobody/yolov5.git"')
    config.write_text(text)
    argv, env = harness_run(config, tmp_path / "reports")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    line = one_error_line(proc)
    assert "https://127.0.0.1:9/nobody/yolov5.git is unreachable" in line and 'fallback = "mirror"' in line
