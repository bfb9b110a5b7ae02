"""Shared fixtures. The stand-in mirror is built once per session into the user cache, so reruns are fast."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import git
import pytest

from harness.mirror import build_mirror, default_mirror_dir, default_wheel_cache


def repo_from_tag(mirror_repo: Path, tag: str, path: Path) -> git.Repo:
    """A new git repository at `path` whose first commit on `main` is the stand-in mirror's `tag` tree: a base for
    test refs (faults, odd shapes) that never touches the mirror itself."""
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test").set_value("user", "email", "test@example.com")
    with tempfile.TemporaryFile() as fh:
        git.Repo(mirror_repo).git.archive("--format=tar", tag, output_stream=fh)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # PEP 706: not in 3.11.2
    repo.git.add("-A")
    repo.index.commit(f"{tag} stand-in")
    return repo


def result_files(reports: Path) -> list[dict]:
    """The result files under ``reports``/results as written: the JSON contract users read, sorted by cell id."""
    import json

    return [json.loads(p.read_text()) for p in sorted((reports / "results").glob("*.json"))]


@pytest.fixture(scope="session")
def mirror_repo() -> Path:
    """The offline stand-in repository (`python -m harness mirror`), built from scratch if absent or stale.

    Lives in harness.paths.cache_dir() (override with $YOLOV5_MATRIX_CACHE): the first run downloads five wheels
    from PyPI (~10 s), later runs find the mirror current and return at once.
    """
    return build_mirror(default_mirror_dir(), wheel_cache=default_wheel_cache())


# The env the end-to-end tests run real exports in: the one that installs quickly here (torch 2.14.1 on py3.11).
QUICK_ENV = "py311-torch2.14"


@pytest.fixture(scope="session")
def quick_env() -> str:
    return QUICK_ENV


@pytest.fixture(scope="session")
def config():
    """The project's real matrix.toml."""
    from harness.config import load_config

    return load_config(Path(__file__).resolve().parent.parent / "matrix.toml")


@pytest.fixture(scope="session")
def env_python(config) -> Path:
    """The quick env's interpreter (torch, onnx, onnxruntime), built into the cache on first use (~1-2 min with
    uv's wheel cache warm, a few GB of downloads cold) and reused afterwards."""
    from harness.envs import ensure_env
    from harness.paths import cache_dir

    return ensure_env(config.envs[QUICK_ENV], cache_dir())


# A script tag in a path, a branch name and an exception message: what the report must show as text, never run.
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="session")
def make_config(tmp_path_factory: pytest.TempPathFactory):
    """Write a copy of the project's matrix.toml with other refs (same envs, so the cached quick env is reused)."""
    import json
    import re

    text = (Path(__file__).resolve().parent.parent / "matrix.toml").read_text()

    def write(refs: list[str], weights: Path | None = None, small: bool = False) -> Path:
        """``weights``: a checkpoint to use instead of building one (skips the checkpoint stage's worker);
        ``small``: yolov5n at 160 instead of the configured model (exports in seconds)."""
        quoted = ", ".join(json.dumps(r) for r in refs)  # a JSON string is a valid TOML basic string
        path = tmp_path_factory.mktemp("config") / "matrix.toml"
        new = re.sub(r"(?m)^refs = .*$", lambda _: f"refs = [{quoted}]", text, count=1)
        if small:
            new = re.sub(r"(?m)^cfg = .*$", 'cfg = "yolov5n.yaml"', new, count=1)
            new = re.sub(r"(?m)^imgsz = .*$", "imgsz = 160", new, count=1)
        if weights is not None:
            new = re.sub(r"(?m)^(seed = .*)$", lambda m: f"{m.group(1)}\nweights = {json.dumps(str(weights))}", new,
                         count=1)
        path.write_text(new)
        return path

    return write


@pytest.fixture(scope="session")
def failing_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real git repository, under a path holding a script tag, whose branches `a` and `b` are not YOLOv5 trees:
    their models/yolo.py raises an error whose message holds a script tag, so every cell stops at the checkpoint
    stage within seconds (at the patch stage, before any worker, when the config names `weights`). A third branch
    is named like a script tag (git allows < > ( ) / in ref names)."""
    import git

    path = tmp_path_factory.mktemp("hostile") / HOSTILE / "repo"
    repo = git.Repo.init(path, initial_branch="a")
    (path / "models").mkdir()
    (path / "models" / "yolov5s.yaml").write_text("nc: 80\n")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test").set_value("user", "email", "test@example.com")
    for branch in ("a", "b"):
        if branch != "a":
            repo.git.checkout("-b", branch)
        (path / "models" / "yolo.py").write_text(
            f'raise RuntimeError("branch {branch} is not YOLOv5: {HOSTILE} & \\"quotes\\"")\n')
        repo.index.add(["models/yolov5s.yaml", "models/yolo.py"])
        repo.index.commit(f"{branch}: not YOLOv5")
    repo.create_head(HOSTILE, "a")
    return path


# -- small real runs (tests/test_faults.py, test_resume.py, test_concurrency.py) ------------------------------------


@pytest.fixture(scope="session")
def small_weights(mirror_repo: Path, env_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolov5n checkpoint of the v7.0 stand-in, built once by the harness's own worker: runs that name it as
    [model] weights skip the checkpoint stage, so a small run costs its exports only."""
    from harness import proc
    from harness.paths import cache_dir
    from harness.source import get_checkout

    tree = get_checkout(str(mirror_repo), "v7.0", cache=cache_dir()).path
    out = tmp_path_factory.mktemp("weights") / "yolov5n-v7.0.pt"
    job = {"task": "checkpoint", "tree": str(tree), "cfg": "yolov5n.yaml", "nc": 80, "seed": 0, "weights_out": str(out)}
    answer, ran = proc.run_worker(env_python, job, workdir=out.parent / "job", watch=proc.Watch(600))
    assert answer and answer.get("ok") and out.is_file(), ran.tail()
    return out


@pytest.fixture(scope="session")
def small_matrix(config):
    """Write a matrix.toml for a small real run: the quick env, yolov5n at 160, given refs/variants/formats, and
    optional [timeouts] / [limits] tables."""
    import json

    env = config.envs[QUICK_ENV]

    def write(path: Path, *, repo: Path, refs: list[str], weights: Path, variants: tuple[str, ...] = ("1",),
              formats: tuple[str, ...] = ("torchscript",), timeouts: dict[str, float] | None = None,
              limits: dict[str, int] | None = None) -> Path:
        q = json.dumps  # a JSON string or list of strings is valid TOML
        lines = ["[source]", f"repo = {q(str(repo))}", f"refs = {q(refs)}", 'fallback = "error"', "",
                 "[model]", 'cfg = "yolov5n.yaml"', "nc = 80", "imgsz = 160", "seed = 0",
                 f"weights = {q(str(weights))}",
                 "", "[matrix]", f"variants = {q(list(variants))}", f"formats = {q(list(formats))}", ""]
        for table, values in (("timeouts", timeouts), ("limits", limits)):
            if values:
                lines += [f"[{table}]", *(f"{k} = {v}" for k, v in values.items()), ""]
        lines += [f'[envs."{QUICK_ENV}"]', f"python = {q(env.python)}"]
        lines += [f"{pin} = {q(getattr(env, pin))}" for pin in ("torch", "torchvision", "onnx", "onnxruntime", "numpy")]
        lines += [f"extra = {q(list(env.extra))}", ""]
        path.write_text("\n".join(lines))
        return path

    return write


def harness_cmd(config_path: Path, reports: Path, *args: str) -> list[str]:
    """argv of `python -m harness run` on the quick env (for subprocess: real signals, real exit codes)."""
    import sys

    return [sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--config", str(config_path),
            "--reports", str(reports), *args]


@pytest.fixture(scope="session")
def harness_run():
    """`harness_run(config, reports, *args, env=...)` -> argv + the environment for a small run: the torch.load
    default of torch>=2.6 relaxed (these tests are about faults and files, not that cause: one attempt per cell)."""
    import os

    def make(config_path: Path, reports: Path, *args: str) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        return harness_cmd(config_path, reports, *args), env

    return make


@pytest.fixture(scope="session")
def small_config_text(config):
    """matrix.toml text with one env named "quick" (the quick env's pins, or overrides), for runs expected to stop
    before any export: nothing here needs torch."""
    import json

    env = config.envs[QUICK_ENV]

    def text(*, refs: list[str] | None = None, weights: Path | None = None, python: str | None = None,
             extra: list[str] | None = None, repo: str = "/nonexistent/yolov5") -> str:
        q = json.dumps
        lines = ["[source]", f"repo = {q(repo)}", f"refs = {q(refs or ['v7.0'])}", 'fallback = "error"', "",
                 "[model]", 'cfg = "yolov5n.yaml"', "nc = 80", "imgsz = 160", "seed = 0"]
        lines += [f"weights = {q(str(weights))}"] if weights else []
        lines += ["", "[matrix]", 'variants = ["1"]', 'formats = ["torchscript"]', "", "[envs.quick]",
                  f"python = {q(python or env.python)}"]
        lines += [f"{pin} = {q(getattr(env, pin))}" for pin in ("torch", "torchvision", "onnx", "onnxruntime", "numpy")]
        lines += [f"extra = {q(list(env.extra) if extra is None else extra)}", ""]
        return "\n".join(lines)

    return text
