"""Shared fixtures. The YOLOv5 repository the tests run on is chosen once per session (`yolov5_source`: real
upstream code when this machine has it, the PyPI stand-ins otherwise); the stand-in mirror and the quick env are built
once into the user cache, so reruns are fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import git
import pytest

from harness.sources.mirror import build_mirror, default_mirror_dir, default_wheel_cache

PROJECT = Path(__file__).resolve().parent.parent
# Which repository the tests run on: this variable (any path or URL git takes), else the real upstream bundle beside
# the project (/work/shared in a worktree at /work/wt-a as in /work/main, and in CI), else the stand-in mirror.
TEST_REPO_ENV = "YOLOV5_TEST_REPO"
SHARED_BUNDLE = PROJECT.parent / "shared" / "upstream" / "yolov5.bundle"
# The GitHub repository the shared bundle was made from: a run on that URL resolves every tag to the same commit.
UPSTREAM_URL = "https://github.com/ultralytics/yolov5.git"

Origin = Literal["env override", "upstream bundle", "stand-in mirror"]
Kind = Literal["upstream", "stand-in"]


@dataclass(frozen=True)
class Yolov5Source:
    """The YOLOv5 repository the tests run on.

    Attributes:
        repo: what `--repo` gets (a path, or a URL from $YOLOV5_TEST_REPO).
        origin: how it was chosen: $YOLOV5_TEST_REPO, the shared upstream bundle, or the stand-in mirror.
        kind: what its tags hold: "stand-in" when their trees carry STANDIN.json (the mirror's), else "upstream".
            Expectations that differ between real tags and stand-ins are data keyed by this.
        bundle: whether `repo` is a git bundle file (results then record ``source = "bundle:<path>"``).
        tags: tag -> commit SHA (annotated tags peeled), read with `git for-each-ref` from the clone: what results'
            `commit` is checked against, without the harness's own resolver.
    """

    repo: str
    origin: Origin
    kind: Kind
    bundle: bool
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.origin}: {self.repo})"


def chosen_repo() -> tuple[str | None, Origin]:
    """The repository the session will use and why; None for the stand-in mirror (built on first use)."""
    override = os.environ.get(TEST_REPO_ENV, "").strip()
    if override:
        return override, "env override"
    if SHARED_BUNDLE.is_file():
        return str(SHARED_BUNDLE), "upstream bundle"
    return None, "stand-in mirror"


def _is_bundle(repo: str) -> bool:
    try:
        with open(repo, "rb") as fh:
            return fh.read(16) in (b"# v2 git bundle\n", b"# v3 git bundle\n")
    except OSError:
        return False


def repo_from_tag(source: Path | str, tag: str, path: Path) -> git.Repo:
    """A new git repository at `path` whose first commit on `main` is the tree of `tag` in `source` (the stand-in
    mirror, the upstream bundle, any repository git reads): a base for test refs (faults, odd shapes) that never
    touches `source` itself. The tree comes from the harness's cached clone of `source`."""
    from harness.paths import cache_dir
    from harness.sources.checkout import open_repo

    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test").set_value("user", "email", "test@example.com")
    with tempfile.TemporaryFile() as fh, open_repo(str(source), cache=cache_dir(), fetch=True) as clone:
        clone.git.archive("--format=tar", f"refs/tags/{tag}", output_stream=fh)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    repo.git.add("-A")
    repo.index.commit(f"{tag} of {source}")
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


@pytest.fixture(scope="session")
def yolov5_source(request: pytest.FixtureRequest) -> Yolov5Source:
    """The repository the tests that run YOLOv5 code use: $YOLOV5_TEST_REPO, else ../shared/upstream/yolov5.bundle
    (real upstream tags with their history), else the stand-in mirror (a user's clone has no ../shared: their tests
    still pass, on stand-ins). Tests using it record it (`yolov5_source` property; pytest_report_header)."""
    from harness.paths import cache_dir
    from harness.sources.checkout import STANDIN_FILE, open_repo

    repo, origin = chosen_repo()
    if repo is None:
        repo = str(request.getfixturevalue("mirror_repo"))
    with open_repo(repo, cache=cache_dir(), fetch=True) as clone:  # one clone, shared with the harness's runs
        listed = clone.git.for_each_ref("--format=%(refname:lstrip=2) %(objectname) %(*objectname)", "refs/tags")
        rows = (f"{line} ".split(" ")[:3] for line in listed.splitlines())
        tags = {name: peeled or sha for name, sha, peeled in rows}
        if "v7.0" not in tags:
            pytest.fail(f"{repo} has no tag v7.0: point ${TEST_REPO_ENV} at a YOLOv5 repository with its release tags")
        standin = bool(clone.git.ls_tree("--name-only", "refs/tags/v7.0", STANDIN_FILE).strip())
    return Yolov5Source(repo, origin, "stand-in" if standin else "upstream", _is_bundle(repo), tags)


def pytest_report_header(config: pytest.Config) -> str:
    repo, origin = chosen_repo()
    if repo is None:
        return (f"yolov5 source: stand-in mirror {default_mirror_dir()} (no {SHARED_BUNDLE}; set ${TEST_REPO_ENV} to "
                f"run on real tags)")
    return f"yolov5 source: {origin} {repo}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Every test that ran on `yolov5_source` (directly or through a fixture) says which: a `yolov5_source` property
    (in JUnit XML) and a report section (shown with a failure)."""
    yield
    source = getattr(item, "funcargs", {}).get("yolov5_source")
    if isinstance(source, Yolov5Source):
        item.user_properties.append(("yolov5_source", source.label))
        item.add_report_section("setup", "yolov5 source", source.label)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    ran = [r for r in terminalreporter.getreports("passed") + terminalreporter.getreports("failed")
           + terminalreporter.getreports("skipped")
           if r.when == "call" and any(k == "yolov5_source" for k, _ in r.user_properties)]
    labels = sorted({v for r in ran for k, v in r.user_properties if k == "yolov5_source"})
    if labels:
        terminalreporter.write_line(f"{len(ran)} tests ran on yolov5 source: {', '.join(labels)}")


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
    from harness.envs.build import ensure_env
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

    def write(refs: list[str], weights: Path | None = None, small: bool = False,
              variants: tuple[str, ...] | None = None, formats: tuple[str, ...] | None = None) -> Path:
        """``weights``: a checkpoint to use instead of building one (skips the checkpoint stage's worker);
        ``small``: yolov5n at 160 instead of the configured model (exports in seconds); ``variants``, ``formats``:
        the [matrix] lists instead of the configured ones."""
        quoted = ", ".join(json.dumps(r) for r in refs)  # a JSON string is a valid TOML basic string
        path = tmp_path_factory.mktemp("config") / "matrix.toml"
        new = re.sub(r"(?m)^refs = .*$", lambda _: f"refs = [{quoted}]", text, count=1)
        for key, values in (("variants", variants), ("formats", formats)):
            if values is not None:  # the first such line is [matrix]'s ([compile] has variants too, further down)
                line = f"{key} = {json.dumps(list(values))}"
                new = re.sub(rf"(?m)^{key} = .*$", lambda _, line=line: line, new, count=1)
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
    from harness.envs import proc
    from harness.paths import cache_dir
    from harness.sources.checkout import get_checkout

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
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real git repository with one commit tagged v7.0 that is not YOLOv5: a source that opens (the run's preflight
    clones it), for runs expected to stop at a later check."""
    path = tmp_path_factory.mktemp("tiny") / "repo"
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test").set_value("user", "email", "test@example.com")
    (path / "README").write_text("not YOLOv5\n")
    repo.index.add(["README"])
    repo.index.commit("one commit")
    repo.create_tag("v7.0")
    return path


@pytest.fixture(scope="session")
def small_config_text(config, tiny_repo: Path):
    """matrix.toml text with one env named "quick" (the quick env's pins, or overrides), for runs expected to stop
    before any export: nothing here needs torch. The default repo opens (`tiny_repo`), so the source preflight passes
    and the run stops where the test means it to."""
    import json

    env = config.envs[QUICK_ENV]

    def text(*, refs: list[str] | None = None, weights: Path | None = None, python: str | None = None,
             extra: list[str] | None = None, repo: str | None = None) -> str:
        repo = repo or str(tiny_repo)
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


# -- one small real run on the tests' repository, shared by tests/test_shard.py and tests/test_report.py -------------


@dataclass(frozen=True)
class SmallRun:
    """A finished `python -m harness run` and how to repeat it (into other reports folders, with other options)."""

    config: Path
    reports: Path
    source: Yolov5Source
    env: str

    def argv(self, reports: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "harness", "run", "--env", self.env, "--config", str(self.config),
                "--repo", self.source.repo, "--reports", str(reports), *extra]

    def run(self, reports: Path, *extra: str) -> None:
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        proc = subprocess.run(self.argv(reports, *extra), cwd=PROJECT, capture_output=True, text=True, timeout=1800,
                              check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]


# v6.1 -> v7.0: the native export goes from 4 outputs to 1 (v6.2 added Detect.export), on real tags and stand-ins.
SMALL_RUN_REFS = ("v6.1", "v7.0")
SMALL_RUN_VARIANTS = ("native", "3")


@pytest.fixture(scope="session")
def small_run(yolov5_source: Yolov5Source, make_config, env_python: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> SmallRun:
    """Four real cells on `yolov5_source`: v6.1 and v7.0 x variants native, 3 x TorchScript, yolov5n at 160, with
    torch>=2.6's weights_only default relaxed up front (one attempt per cell: these tests are about shards and the
    page, not that cause). Checkpoints are built by the harness (cached across sessions)."""
    config = make_config(list(SMALL_RUN_REFS), small=True, variants=SMALL_RUN_VARIANTS, formats=("torchscript",))
    run = SmallRun(config, tmp_path_factory.mktemp("small-run"), yolov5_source, QUICK_ENV)
    run.run(run.reports)
    return run



def first_attempt(result: dict) -> dict:
    """A result file's out-of-the-box attempt."""
    return dict(result["attempts"][0])


def deciding_attempt(result: dict) -> dict:
    """A result file's deciding attempt: the workaround rerun's when one decided."""
    return dict(result["attempts"][result["decided"]])


def forget_learned_chains() -> Path:
    """Forget the workaround chains earlier runs learned (<cache>/learned, harness/run/variant.py), for a test that
    watches a search step by step; the folder, where the test's run writes them again."""
    from harness.paths import cache_dir

    learned = cache_dir() / "learned"
    shutil.rmtree(learned, ignore_errors=True)
    return learned


@pytest.fixture
def fresh_search() -> Path:
    return forget_learned_chains()
