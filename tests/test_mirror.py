"""The offline stand-in mirror: real wheels from PyPI (cached), real git repos, the real CLI."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest

from harness.errors import SourceError
from harness.sources.mirror import (
    SOURCE_FIXES,
    STANDIN_FILE,
    STANDINS,
    StandIn,
    build_mirror,
    default_wheel_cache,
    fetch_wheel,
    rewrite_imports,
)

HARNESS_ROOT = Path(__file__).resolve().parent.parent

# Where each upstream tag keeps its exporter: v5.0 still had models/export.py, v6.0 moved it to the root.
EXPORT_SCRIPT = {"v5.0": "models/export.py", "v6.0": "export.py", "v6.1": "export.py", "v6.2": "export.py",
                 "v7.0": "export.py"}

# A Python with torch & co. to run the mirrored code in (the slow tests skip without one).
ENV_PYTHON = Path(os.environ.get("YOLOV5_MATRIX_TEST_PYTHON", "/tmp/envtest/venv/bin/python"))

_IMPORT_LINE = re.compile(r"^\s*(from\s+yolov5[\s.]|import\s+yolov5\b)", re.MULTILINE)


def _blobs(commit: git.Commit) -> dict[str, git.Blob]:
    return {str(item.path): item for item in commit.tree.traverse() if isinstance(item, git.Blob)}


def _py_files(commit: git.Commit) -> dict[str, str]:
    return {path: blob.data_stream.read().decode("utf-8") for path, blob in _blobs(commit).items()
            if path.endswith(".py")}


def _refs(path: Path) -> dict[str, str]:
    """Every ref of a repo -> the object it names (tag objects for annotated tags)."""
    with git.Repo(path) as repo:
        return {ref.path: ref.object.hexsha for ref in repo.refs}


def test_every_tag_resolves_to_its_standin_in_table_order(mirror_repo: Path) -> None:
    with git.Repo(mirror_repo) as repo:
        previous = None
        for standin in STANDINS:
            tag = repo.tags[standin.tag]
            assert tag.tag is not None, f"{standin.tag} must be an annotated tag like upstream's"
            assert tag.tag.tag == standin.tag
            assert repo.git.rev_parse("--verify", f"{standin.tag}^{{commit}}") == tag.commit.hexsha
            assert repo.tags[f"pypi-{standin.version}"].commit == tag.commit
            assert tag.commit.parents == ((previous,) if previous else ())
            previous = tag.commit
        assert repo.head.ref.name == "master" and repo.head.commit == previous
        assert not repo.is_dirty(untracked_files=True)


def test_standin_json_describes_the_distribution(mirror_repo: Path) -> None:
    with git.Repo(mirror_repo) as repo:
        for standin in STANDINS:
            doc = json.loads((repo.tags[standin.tag].commit.tree / STANDIN_FILE).data_stream.read())
            assert doc["distribution"] == f"yolov5=={standin.version}"
            assert doc["stands_in_for"] == standin.tag
            assert doc["closeness"] == standin.closeness
            assert doc["note"] == standin.note
            assert doc["wheel_sha256"] == standin.sha256


def test_no_yolov5_import_remains_and_everything_compiles(mirror_repo: Path) -> None:
    with git.Repo(mirror_repo) as repo:
        for standin in STANDINS:
            files = _py_files(repo.tags[standin.tag].commit)
            assert len(files) > 20, f"{standin.tag}: expected the whole package, got {sorted(files)}"
            for path, source in files.items():
                assert not _IMPORT_LINE.search(source), f"{standin.tag}:{path} still imports yolov5"
                tree = ast.parse(source, filename=path)
                compile(tree, path, "exec")
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        assert all(not a.name.startswith("yolov5") for a in node.names), f"{standin.tag}:{path}"
                    if isinstance(node, ast.ImportFrom):
                        assert not (node.module or "").startswith("yolov5"), f"{standin.tag}:{path}"


def test_layout_is_upstreams(mirror_repo: Path) -> None:
    with git.Repo(mirror_repo) as repo:
        for standin in STANDINS:
            tree = repo.tags[standin.tag].commit.tree
            names = set(_blobs(repo.tags[standin.tag].commit))
            assert "class Detect(" in (tree / "models/yolo.py").data_stream.read().decode()
            assert EXPORT_SCRIPT[standin.tag] in names
            assert {"models/common.py", "utils/general.py", "models/yolov5s.yaml", "train.py", "detect.py",
                    "hubconf.py", "requirements.txt"} <= names
            assert ("test.py" if standin.tag == "v5.0" else "val.py") in names
            assert not {"__init__.py", "cli.py", "helpers.py"} & names, "pip-only root files must be dropped"
        assert "export.py" not in _blobs(repo.tags["v5.0"].commit)


def test_requirements_come_from_metadata_without_pip_only_entries(mirror_repo: Path) -> None:
    with git.Repo(mirror_repo) as repo:
        for standin in STANDINS:
            text = (repo.tags[standin.tag].commit.tree / "requirements.txt").data_stream.read().decode()
            names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in text.splitlines()
                     if line and not line.startswith("#")}
            assert {"torch", "torchvision", "numpy", "pyyaml"} <= names
            assert not {"fire", "boto3", "sahi", "pytest", "pycocotools-windows"} & names


def test_pip_only_code_paths_are_undone(mirror_repo: Path) -> None:
    with git.Repo(mirror_repo) as repo:
        for standin in STANDINS:
            tree = repo.tags[standin.tag].commit.tree
            for fix in SOURCE_FIXES:
                if standin.version in fix.found_in:
                    text = (tree / fix.path).data_stream.read().decode()
                    assert fix.new in text and fix.old not in text, f"{standin.tag}: {fix.path}: {fix.why}"
        export = (repo.tags["v5.0"].commit.tree / "models/export.py").data_stream.read().decode()
        assert export.index("sys.path.append(") < export.index("import models\n"), "root on sys.path before imports"


def test_rewrite_imports_handles_every_form_the_wheels_use() -> None:
    source = (
        "import yolov5.models as models\n"
        "import yolov5.val as val  # for end-of-epoch mAP\n"
        "import yolov5.segment.val as validate\n"
        "import yolov5.export\n"
        "from yolov5.utils.general import (LOGGER,\n"
        "                                  colorstr)\n"
        "from yolov5.utils import TryExcept\n"
        "from yolov5.classify import val as validate\n"
        "from yolov5 import __version__\n"
        "def f():\n"
        "    from yolov5.models.experimental import attempt_load  # scoped\n"
        "    return yolov5.export.run(weights='yolov5s.pt')\n"
        "# Usage: from yolov5.utils.plots import *; plot_val()\n"
    )
    assert rewrite_imports(source, "6.1.9") == (
        "import models\n"
        "import val  # for end-of-epoch mAP\n"
        "import segment.val as validate\n"
        "import export\n"
        "from utils.general import (LOGGER,\n"
        "                                  colorstr)\n"
        "from utils import TryExcept\n"
        "from classify import val as validate\n"
        "__version__ = '6.1.9'  # mirror: was `from yolov5 import __version__`\n"
        "def f():\n"
        "    from models.experimental import attempt_load  # scoped\n"
        "    return export.run(weights='yolov5s.pt')\n"
        "# Usage: from utils.plots import *; plot_val()\n"
    )


def test_same_inputs_give_the_same_shas(mirror_repo: Path, tmp_path: Path) -> None:
    wheels = default_wheel_cache()  # filled by mirror_repo: these builds need no network
    first = build_mirror(tmp_path / "a", wheel_cache=wheels)
    second = build_mirror(tmp_path / "b", wheel_cache=wheels)
    refs = _refs(first)
    assert len(refs) == 2 * len(STANDINS) + 1  # vX.Y + pypi-X.Y.Z tags + master
    assert refs == _refs(second) == _refs(mirror_repo)


def test_rebuilds_when_the_table_changes_and_not_otherwise(mirror_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    build_mirror(dest, wheel_cache=default_wheel_cache(), standins=STANDINS[:2])
    with git.Repo(dest) as repo:
        assert {t.name for t in repo.tags} == {"v5.0", "v6.0", "pypi-5.0.3", "pypi-6.0.6"}
    build_mirror(dest, wheel_cache=default_wheel_cache(), standins=STANDINS[:1])
    with git.Repo(dest) as repo:
        assert {t.name for t in repo.tags} == {"v5.0", "pypi-5.0.3"}
    before = (dest.stat().st_ino, (dest / ".git" / "config").stat().st_mtime_ns)
    build_mirror(dest, wheel_cache=default_wheel_cache(), standins=STANDINS[:1])
    assert (dest.stat().st_ino, (dest / ".git" / "config").stat().st_mtime_ns) == before, "no-op expected"


def test_a_deleted_tag_triggers_a_rebuild(mirror_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    build_mirror(dest, wheel_cache=default_wheel_cache(), standins=STANDINS[:1])
    with git.Repo(dest) as repo:
        repo.delete_tag(repo.tags["v5.0"])
    build_mirror(dest, wheel_cache=default_wheel_cache(), standins=STANDINS[:1])
    with git.Repo(dest) as repo:
        assert repo.tags["v5.0"].commit == repo.tags["pypi-5.0.3"].commit


def test_refuses_to_replace_a_directory_that_is_not_a_mirror(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(SourceError, match="is not a stand-in mirror"):
        build_mirror(tmp_path, wheel_cache=tmp_path / "wheels")
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    standin = STANDINS[0]
    (tmp_path / f"yolov5-{standin.version}-py3-none-any.whl").write_bytes(b"not the PyPI wheel")
    with pytest.raises(SourceError, match=rf"sha256 .* expected {standin.sha256}"):
        fetch_wheel(standin, tmp_path)


def test_an_unknown_version_fails_with_one_actionable_line(tmp_path: Path) -> None:
    bogus = StandIn("v0.0", "0.0.0.dev999", "none", "no such release", "0" * 64)
    with pytest.raises(SourceError, match=r"cannot download yolov5==0\.0\.0\.dev999 .* put the wheel into"):
        fetch_wheel(bogus, tmp_path)


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "YOLOV5_MATRIX_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=HARNESS_ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_cli_prints_what_it_tagged(mirror_repo: Path) -> None:
    proc = _cli("mirror", "--dest", str(mirror_repo), cache=mirror_repo.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"mirror: 5 stand-ins tagged at {mirror_repo}: v5.0 (yolov5==5.0.3), v6.0 (yolov5==6.0.6), "
        "v6.1 (yolov5==6.0.7), v6.2 (yolov5==6.1.9), v7.0 (yolov5==7.0.0)\n"
    )


def test_cli_turns_a_harness_error_into_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("user data")
    proc = _cli("mirror", "--dest", str(tmp_path / "dest"), cache=tmp_path / "cache")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "not a stand-in mirror" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tag", [s.tag for s in STANDINS])
def test_mirrored_code_builds_a_model_in_a_real_env(mirror_repo: Path, tmp_path: Path, tag: str) -> None:
    """The checkout imports as upstream's does (cwd and PYTHONPATH = checkout) and builds yolov5s from its yaml."""
    if not ENV_PYTHON.exists():
        pytest.skip(f"no env Python at {ENV_PYTHON} (set YOLOV5_MATRIX_TEST_PYTHON)")
    checkout = tmp_path / "checkout"
    git.Repo.clone_from(str(mirror_repo), checkout, branch=tag).close()
    # v6.0/v6.1 download Arial.ttf into YOLOV5_CONFIG_DIR at import time; any TTF under that name will do.
    font = subprocess.run([str(ENV_PYTHON), "-c", ("import matplotlib, pathlib; print(pathlib.Path("
                           "matplotlib.__file__).parent / 'mpl-data/fonts/ttf/DejaVuSans.ttf')")],
                          capture_output=True, text=True, check=True).stdout.strip()
    config_dir = tmp_path / "yolov5-config"
    config_dir.mkdir()
    shutil.copy(font, config_dir / "Arial.ttf")
    code = (
        "import json, torch, models.yolo\n"
        "m = models.yolo.Model('models/yolov5s.yaml').eval()\n"
        "y = m(torch.zeros(1, 3, 64, 64))\n"
        "print('@@result', json.dumps({'detect': type(m.model[-1]).__name__, 'shape': list(y[0].shape)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(checkout), "YOLOV5_CONFIG_DIR": str(config_dir)}
    proc = subprocess.run([str(ENV_PYTHON), "-c", code], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("@@result ", 1)[1])
    # 3 anchors x (8*8 + 4*4 + 2*2) cells at strides 8/16/32 for a 64x64 input, 80 classes + 5.
    assert result == {"detect": "Detect", "shape": [1, 252, 85]}
