"""What a run leaves behind: [artifacts] keep removes the exported files of cells that work (the report says how to
make them again), a full disk stops a run with one line on a real small filesystem and loses nothing saved, and the
`cache` command lists and prunes the harness's cache."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK_ENV

ROOT = Path(__file__).resolve().parent.parent


def small_config(make_config, min_free_mb: int | None = None) -> Path:
    path = make_config(["v7.0"], small=True, variants=("3",), formats=("onnx",))
    if min_free_mb is not None:
        path.write_text(re.sub(r"(?m)^min_free_mb = .*$", f"min_free_mb = {min_free_mb}", path.read_text()))
    return path


def run(config: Path, reports: Path, repo: str, *args: str, env: dict[str, str] | None = None) \
        -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "harness", "run", "--env", QUICK_ENV, "--config", str(config), "--repo", repo,
            "--reports", str(reports), "--jobs", "1", *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, **(env or {})})


def exported(result: dict) -> list[Path]:
    return [p for p in Path(result["artifacts_dir"]).rglob("*") if p.suffix in (".onnx", ".torchscript")]


@pytest.mark.torch
@pytest.mark.slow
def test_a_working_cell_keeps_its_logs_not_its_export(make_config, yolov5_source, tmp_path: Path) -> None:
    config, reports = small_config(make_config), tmp_path / "reports"
    done = run(config, reports, yolov5_source.repo)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = (reports / "results").glob("*.json")
    result = json.loads(path.read_text())
    assert result["outcome"] in ("works", "workaround") and result["artifacts_kept"] is False
    assert exported(result) == [] and list(Path(result["artifacts_dir"]).rglob("export.log"))
    assert re.search(r"artifacts: removed the exported files of 1 cell\(s\) and earlier attempts' of the others "
                     r"\(\[artifacts\] keep = \"failed\"\): \d+ MB freed", done.stderr), done.stderr[-2000:]
    page = tmp_path / "index.html"
    subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(reports), "--out", str(page),
                    "--junit", str(tmp_path / "junit.xml")], cwd=ROOT, check=True, capture_output=True)
    again = (f"python -m harness run --env {QUICK_ENV} --refs v7.0 --variants 3 --formats onnx --force "
             f"--keep-artifacts all")
    assert "the exported files were not kept" in page.read_text() and again in page.read_text()
    # The command the report gives makes them again, and keeps them.
    done = run(config, reports, yolov5_source.repo, *again.split()[6:])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(path.read_text())
    assert result["artifacts_kept"] is True and [p.name for p in exported(result)] == ["model.onnx"]
    # The same cell into another reports folder writes the same bytes: stored once, one inode for both.
    done = run(config, tmp_path / "other", yolov5_source.repo, *again.split()[6:])
    assert done.returncode == 0, done.stderr[-3000:]
    [other] = exported(json.loads(next((tmp_path / "other" / "results").glob("*.json")).read_text()))
    [first] = exported(result)
    assert other != first and other.stat().st_ino == first.stat().st_ino, done.stderr[-2000:]
    assert re.search(r"artifacts: \d+ MB of identical exports stored once", done.stderr), done.stderr[-2000:]


def test_a_broken_cell_keeps_only_the_file_its_verdict_is_about(tmp_path: Path) -> None:
    from harness.results import model as results
    from harness.results.model import Attempt, CellResult, ExportFacts
    from harness.run import artifacts

    cell = tmp_path / "work" / "v5.0__e__1__onnx"
    files = {"out-of-the-box": ["model.onnx", "model.torchscript.pt"],
             "workaround": ["model.onnx", "model.onnx.data", "model.torchscript.pt"]}
    attempts = []
    for folder, names in files.items():
        (cell / folder).mkdir(parents=True)
        for name in [*names, "export.log"]:
            (cell / folder / name).write_bytes(b"x" * 1000)
        (cell / folder / "model.pt").symlink_to(tmp_path / "checkpoint.pt")  # the shared checkpoint: never counted
        attempts.append(Attempt(name="" if folder == "out-of-the-box" else "dynamo=False", status="fail",
                                export=ExportFacts(log=str(cell / folder / "export.log"),
                                                   files=[{"name": n, "bytes": 1000} for n in names])))
    broken = CellResult(cell="v5.0__e__1__onnx", format="onnx", attempts=attempts, decided=1,
                        artifacts_dir=str(cell))
    path = results.save_result(tmp_path / "reports", broken)
    assert artifacts.prune([path], "failed", log=lambda _: None) == 3000
    left = sorted(str(p.relative_to(cell)) for p in cell.rglob("*") if p.is_file() and not p.is_symlink())
    assert left == ["out-of-the-box/export.log", "workaround/export.log", "workaround/model.onnx",
                    "workaround/model.onnx.data"]
    assert results.read_result(path).artifacts_kept is True  # its verdict's file is there
    assert artifacts.prune([path], "none", log=lambda _: None) == 2000
    assert results.read_result(path).artifacts_kept is False


def test_identical_exports_are_stored_once_and_dropped_with_their_last_cell(tmp_path: Path) -> None:
    from harness.run import artifacts

    store = tmp_path / "work" / ".store"
    same, odd = b"onnx" * (artifacts.STORE_MIN_BYTES // 4), b"ONNX" * (artifacts.STORE_MIN_BYTES // 4)
    cells = []
    for name, content in (("a", same), ("b", same), ("c", odd)):
        folder = tmp_path / "work" / "env" / name / "out-of-the-box"
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(content)
        (folder / "export.log").write_bytes(same)  # logs stay where they are, whatever their size
        cells.append(folder)
    saved = artifacts.link_identical((f for c in cells for f in c.iterdir()), store)
    a, b, c = (folder / "model.onnx" for folder in cells)
    assert saved == len(same) and a.stat().st_ino == b.stat().st_ino != c.stat().st_ino
    assert a.read_bytes() == same and c.read_bytes() == odd
    assert sorted(p.stat().st_nlink for p in store.iterdir()) == [2, 3]
    assert all((folder / "export.log").stat().st_nlink == 1 for folder in cells)
    assert artifacts.link_identical([a, b, c], store) == 0  # a second pass changes nothing
    for path in (a, b):
        path.unlink()
    assert artifacts.drop_unlinked(store) == len(same) and [p.stat().st_nlink for p in store.iterdir()] == [2]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A cache whose work/ is a real 3 MB tmpfs (everything else links to the user's cache: envs, checkouts)."""
    from harness.paths import cache_dir

    real, cache = cache_dir(), tmp_path / "cache"
    cache.mkdir()
    for part in real.iterdir():
        if part.name != "work":
            (cache / part.name).symlink_to(part)
    (cache / "work").mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(cache / "work")],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the disk-full test needs one")
    try:
        yield cache
    finally:
        subprocess.run(["umount", "-l", str(cache / "work")], check=False)


@pytest.mark.torch
@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_keeps_what_was_saved(make_config, yolov5_source, small_disk,
                                                                         tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    saved = reports / "results" / "earlier.json"
    saved.parent.mkdir(parents=True)
    saved.write_text('{"kept": true}')
    env = {"YOLOV5_MATRIX_CACHE": str(small_disk)}
    # Before anything runs: less free space than [artifacts] min_free_mb (1024 MB by default).
    before = run(small_config(make_config), reports, yolov5_source.repo, env=env)
    assert before.returncode == 2
    work = small_disk / "work" / QUICK_ENV
    assert before.stderr.strip().splitlines() == [
        (f"error: disk full: {work} has 3 MB free, a run needs about 1024 MB — free space there or run "
         f"`python -m harness cache --prune`, then rerun (results saved so far are kept)")]
    # Mid-run: allowed to start, the export meets ENOSPC on the real filesystem; the run stops, nothing is saved
    # for that cell, what was saved before is whole.
    during = run(small_config(make_config, min_free_mb=0), reports, yolov5_source.repo, env=env)
    assert during.returncode == 2, during.stderr[-3000:]
    last = during.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: disk full: {re.escape(str(work))}/\S+ ran out of space \(\d+ MB free now\) — free "
                        r"space there or run `python -m harness cache --prune`, then rerun \(results saved so far "
                        r"are kept\)", last), last
    assert sorted(p.name for p in (reports / "results").iterdir()) == ["earlier.json"]
    assert saved.read_text() == '{"kept": true}'


def test_the_cache_command_lists_and_prunes(tmp_path: Path, config) -> None:
    """A cache made here: an env venv the config no longer names is pruned, one it names is kept, work folders go
    only with --older-than; sizes count a hard link once."""
    from harness.envs.build import env_dir

    cache = tmp_path / "cache"
    named = env_dir(config.envs[QUICK_ENV], cache)
    gone = cache / "envs" / "py36-torch1.5-0123456789abcdef"
    for folder in (named, gone, cache / "work" / "py311-torch2.14" / "abc", cache / "checkpoints" / "x"):
        folder.mkdir(parents=True)
    (named / "big").write_bytes(b"x" * 2**20)
    os.link(named / "big", cache / "checkpoints" / "x" / "same-bytes")
    (gone / "old").write_bytes(b"y" * 2**20)
    (cache / "work" / "py311-torch2.14" / "abc" / "model.onnx").write_bytes(b"z" * 2**20)
    # uv's own cache is listed too: an empty one here, so the listing does not walk the user's GBs
    env = {**os.environ, "YOLOV5_MATRIX_CACHE": str(cache), "UV_CACHE_DIR": str(tmp_path / "uv")}
    (tmp_path / "uv").mkdir()

    def cache_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "harness", "cache", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    from harness.cache import sizes

    mib = 2**20
    assert sizes(cache / "envs") == (2 * mib, mib)  # "big" is linked from checkpoints/ too: removing envs keeps it
    listed = cache_cmd()
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:12]] == [
        "envs", "work", "checkpoints", "patched", "checkouts", "repos", "targets", "compile", "learned", "mirror",
        "wheels"]
    pruned = cache_cmd("--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert f"cache: removed envs/{gone.name} (1 MB)" in pruned.stderr
    assert not gone.exists() and named.is_dir() and (cache / "work" / "py311-torch2.14" / "abc").is_dir()
    assert cache_cmd("--prune", "--older-than", "0").returncode == 0
    assert not (cache / "work" / "py311-torch2.14" / "abc").exists() and not (cache / "checkpoints" / "x").exists()
    assert named.is_dir()
    wrong = cache_cmd("--older-than", "3")
    assert wrong.returncode == 2 and wrong.stderr.strip().endswith(
        "error: --older-than: takes DAYS >= 0, with --prune (e.g. --prune --older-than 7)")
    shutil.rmtree(cache)
