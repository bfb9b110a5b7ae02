"""Git bundles as a source (how code reaches air-gapped machines): real bundles read by real git, the ways a copied
bundle goes wrong, and a source that cannot be opened at all stopping the run before any env is built.

The bundle is the one the tests run on when it is one (../shared/upstream/yolov5.bundle: real upstream), else one
made with `git bundle create --all` from the chosen repository (the stand-in mirror on a user's clone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
from conftest import Yolov5Source

from harness.errors import SourceError
from harness.paths import cache_dir
from harness.results import model as results
from harness.sources.checkout import bundle_file, get_checkout, open_repo, repo_label

ROOT = Path(__file__).resolve().parent.parent
ONE_LINE_FIX = "— copy the bundle again, or make a new one with `git bundle create FILE --all`"


@pytest.fixture(scope="module")
def real_bundle(yolov5_source: Yolov5Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if yolov5_source.bundle:
        return Path(yolov5_source.repo)
    path = tmp_path_factory.mktemp("bundle") / "yolov5.bundle"
    with open_repo(yolov5_source.repo, cache=cache_dir()) as clone:
        clone.git.bundle("create", str(path), "--all")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def no_leftovers(cache: Path) -> bool:
    """Nothing half-cloned stays in the cache after a failure."""
    repos = cache / "repos"
    return not repos.exists() or not any(repos.iterdir())


# -- a bundle is a repository ---------------------------------------------------------------------------------------


def test_bundle_at_a_path_with_spaces(real_bundle: Path, yolov5_source: Yolov5Source, cache: Path,
                                      tmp_path: Path) -> None:
    spaced = tmp_path / "air gapped" / "yolo v5.bundle"
    spaced.parent.mkdir()
    shutil.copyfile(real_bundle, spaced)
    tags = yolov5_source.tags
    assert {"v5.0", "v7.0"} <= set(tags)
    got = get_checkout(str(spaced), "v7.0", cache=cache)
    assert got.commit == tags["v7.0"]
    assert (got.path / "models" / "yolo.py").is_file() and (got.path / "export.py").is_file()
    assert got.url == str(spaced)
    assert (got.standin is not None) == (yolov5_source.kind == "stand-in")
    assert bundle_file(str(spaced)) == spaced
    assert repo_label(got.url) == f"bundle:{spaced}"
    # A file:// URL names the same bundle (git itself reads bundles from paths only).
    assert repo_label(spaced.as_uri()) == f"bundle:{spaced}" and "%20" in spaced.as_uri()
    assert get_checkout(spaced.as_uri(), "v5.0", cache=cache).commit == tags["v5.0"]
    assert len(list((cache / "repos").iterdir())) == 1, "the path and its file:// URL share one clone"


def test_labels_of_other_sources(tmp_path: Path, mirror_repo: Path) -> None:
    assert bundle_file(str(mirror_repo)) is None
    assert repo_label(str(mirror_repo)) == str(mirror_repo)
    assert repo_label("https://user:token@example.com/yolov5.git") == "https://example.com/yolov5.git"
    (tmp_path / "x.bundle").write_text("not a bundle\n")
    assert bundle_file(str(tmp_path / "x.bundle")) is None
    assert bundle_file(str(tmp_path / "missing.bundle")) is None


def test_unknown_ref_in_a_bundle_lists_the_closest_tags(real_bundle: Path, cache: Path) -> None:
    with pytest.raises(SourceError) as info:
        get_checkout(str(real_bundle), "v7.1", cache=cache)
    assert str(info.value).startswith(f"source: unknown ref 'v7.1' in {real_bundle} — closest tags: v7.0, v6.1, v6.2")


def test_a_bundle_replaced_by_a_newer_one_is_fetched(real_bundle: Path, yolov5_source: Yolov5Source, cache: Path,
                                                     tmp_path: Path) -> None:
    """A local source is fetched on every run: dropping a newer bundle in place is how an air-gapped site updates."""
    path = tmp_path / "yolov5.bundle"
    with open_repo(str(real_bundle), cache=tmp_path / "full") as clone:
        clone.git.bundle("create", str(path), "refs/tags/v6.1")
    tags = yolov5_source.tags
    assert get_checkout(str(path), "v6.1", cache=cache).commit == tags["v6.1"]
    with pytest.raises(SourceError, match=r"unknown ref 'v7\.0'"):
        get_checkout(str(path), "v7.0", cache=cache)
    shutil.copyfile(real_bundle, path)
    assert get_checkout(str(path), "v7.0", cache=cache).commit == tags["v7.0"]


# -- a bundle that cannot be read: one line with git's reason and the fix ---------------------------------------------


def _damage(real_bundle: Path, tmp_path: Path, how: str) -> Path:
    data = real_bundle.read_bytes()
    path = tmp_path / f"{how}.bundle"
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])  # a copy cut short: the header is whole, the pack is not
    elif how == "corrupt":
        start = data.index(b"PACK") + 4096  # past the pack header: bytes inside the first compressed objects
        path.write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start:start + 1024]) + data[start + 1024:])
    elif how == "header only":
        path.write_bytes(data[: data.index(b"PACK")])
    elif how == "incremental":
        with open_repo(str(real_bundle), cache=tmp_path / "full") as clone:
            clone.git.bundle("create", str(path), "refs/tags/v6.2..refs/tags/v7.0")
    return path


@pytest.mark.parametrize(("how", "reason", "fix"), [
    ("truncated", "early EOF; index-pack died (the file is truncated or corrupt)", ONE_LINE_FIX),
    ("header only", "early EOF; index-pack died (the file is truncated or corrupt)", ONE_LINE_FIX),
    ("corrupt", "pack has bad object at offset", ONE_LINE_FIX),
    ("incremental", "Repository lacks these prerequisite commits: ",
     ("(an incremental bundle: it needs commits it does not hold) — make a full bundle with `git bundle create FILE "
      "--all`")),
])
def test_a_bundle_git_cannot_read(real_bundle: Path, cache: Path, tmp_path: Path, how: str, reason: str,
                                  fix: str) -> None:
    path = _damage(real_bundle, tmp_path, how)
    with pytest.raises(SourceError) as info:
        open_repo(str(path), cache=cache)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"source: cannot read the git bundle {path}: ")
    assert reason in message and message.endswith(fix)
    assert no_leftovers(cache)


@pytest.mark.parametrize(("content", "what"), [
    (b"", "is empty"),
    (b"# v1 git bundle\n", "is a file that does not start with '# v2 git bundle'"),
    (b"PK\x03\x04 a zip file", "is a file that does not start with '# v2 git bundle'"),
])
def test_a_file_that_is_not_a_bundle(tmp_path: Path, cache: Path, content: bytes, what: str) -> None:
    path = tmp_path / "yolov5.bundle"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        open_repo(str(path), cache=cache)
    assert str(info.value) == (f"source: {path} {what}: not a git repository or git bundle — point [source] repo (or "
                               f"--repo, YOLOV5_REPO) at a git repository, a bare clone, or a bundle made with "
                               f"`git bundle create FILE --all`")
    assert no_leftovers(cache)


# -- a source that cannot be opened is a configuration error: exit 2 before any env is built --------------------------


def _sources(tmp_path: Path, real_bundle: Path) -> dict[str, str]:
    (tmp_path / "plain dir").mkdir()
    return {
        "not a repository": str(tmp_path / "plain dir"),
        "missing path": str(tmp_path / "missing"),
        "truncated bundle": str(_damage(real_bundle, tmp_path, "truncated")),
        "empty file": str(Path(tmp_path / "empty.bundle").resolve()),
        "unreachable URL": "https://127.0.0.1:9/nobody/yolov5.git",  # nothing listens on the discard port
    }


@pytest.mark.parametrize("fallback", ["error", "mirror"])
@pytest.mark.parametrize("kind", ["not a repository", "missing path", "truncated bundle", "empty file",
                                  "unreachable URL"])
def test_a_source_that_cannot_be_opened_stops_the_run(real_bundle: Path, small_config_text, quick_env: str,
                                                      tmp_path: Path, kind: str, fallback: str) -> None:
    if kind == "unreachable URL" and fallback == "mirror":
        pytest.skip("an unreachable URL with fallback = \"mirror\" runs the stand-ins (docs/offline.md)")
    source = _sources(tmp_path, real_bundle)[kind]
    Path(tmp_path / "empty.bundle").write_bytes(b"")
    config = tmp_path / "matrix.toml"
    config.write_text(small_config_text().replace('fallback = "error"', f'fallback = "{fallback}"')
                      .replace("[envs.quick]", f'[envs."{quick_env}"]'))
    empty_cache, reports = tmp_path / "cache", tmp_path / "reports"
    empty_cache.mkdir()
    kept = results.result_path(reports, "v7.0__quick__1__torchscript")  # an earlier run's result: nothing is lost
    results.write_json(kept, {"schema": results.SCHEMA_VERSION, "cell": "v7.0__quick__1__torchscript",
                              "attempts": [{"status": "pass"}]})
    before = kept.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config), "--repo", source,
         "--reports", str(reports)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "YOLOV5_MATRIX_CACHE": str(empty_cache)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: source: ") and " — " in lines[0], proc.stderr
    assert source in lines[0]
    assert not (empty_cache / "envs").exists(), "no env was built"
    assert list(reports.rglob("*.json")) == [kept] and kept.read_bytes() == before, "no result written or lost"
    assert not list(empty_cache.glob("repos/*")), "no clone left behind"


def test_a_good_bundle_passes_the_preflight(real_bundle: Path, yolov5_source: Yolov5Source, tmp_path: Path) -> None:
    from harness.run.preflight import check_source

    check_source(str(real_bundle), tmp_path / "cache", "error")
    [clone] = (tmp_path / "cache" / "repos").iterdir()
    assert {(t.name, t.commit.hexsha) for t in git.Repo(clone).tags} == set(yolov5_source.tags.items())
