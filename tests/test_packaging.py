"""The installable harness: `pip install .` gives the `yolov5-export-matrix` command, one version (harness.__version__),
the package data the report needs, and env-side workers that see the harness package and nothing else of the
harness's venv (the wheel keeps harness/ in a directory of its own: see pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import harness
from harness.__main__ import EXIT_INTERNAL_ERROR, SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def uv() -> str:
    found = shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "uv is a dependency of the harness (pyproject.toml) and should be next to this interpreter"
    return found


def run(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, check=False, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with this checkout installed the way a user would (`pip install .`, here through uv): its bin/."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    made = run(uv(), "venv", "--quiet", "--python", sys.executable, venv)
    assert made.returncode == 0, made.stderr
    done = run(uv(), "pip", "install", "--quiet", "--python", venv / "bin" / "python", ROOT)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def test_version_has_one_source(installed: Path, tmp_path: Path) -> None:
    expected = f"yolov5-export-matrix {harness.__version__}"
    for argv in ([installed / "python", "-m", "yolov5_export_matrix", "--version"],
                 [installed / "yolov5-export-matrix", "--version"]):
        proc = run(*argv, cwd=tmp_path)  # not the checkout: the installed package answers
        assert (proc.returncode, proc.stdout.strip()) == (0, expected), proc.stderr
    meta = run(installed / "python", "-c", "import importlib.metadata as m; print(m.version('yolov5-export-matrix'))")
    assert meta.stdout.strip() == harness.__version__


def test_dependencies_are_the_ones_nox_installs(installed: Path) -> None:
    """pyproject's [project] dependencies are the one list: the wheel's metadata and the nox sessions use it."""
    requires = run(installed / "python", "-c",
                   "import importlib.metadata as m; print('\\n'.join(m.requires('yolov5-export-matrix')))")
    from packaging.requirements import Requirement

    assert {str(Requirement(r)) for r in requires.stdout.split("\n") if r} == \
        {str(Requirement(r)) for r in PYPROJECT["project"]["dependencies"]}
    assert not (ROOT / "requirements.txt").exists()  # no second list to drift
    assert "install_harness" in (ROOT / "noxfile.py").read_text() and \
        'PYPROJECT["project"]["dependencies"]' in (ROOT / "noxfile.py").read_text()


def test_installed_report_finds_its_templates(installed: Path, tmp_path: Path) -> None:
    proc = run(installed / "yolov5-export-matrix", "report", "--reports", DATA, "--out", tmp_path / "index.html",
               "--junit", tmp_path / "junit.xml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "<html" in (tmp_path / "index.html").read_text()


def test_workers_of_an_installed_harness_see_only_the_harness(installed: Path) -> None:
    """Env-side steps run with PYTHONPATH = harness.envs.proc.HARNESS_ROOT; installed, that is a directory holding only
    harness/, so an env's interpreter imports harness.worker but not jinja2, gitpython or anything else of the
    harness's venv (on a 3.8 env, a 3.11 site-packages on the path would break imports in ways hard to trace)."""
    probe = ("import json, importlib.util as u; w = u.find_spec('harness.worker') if u.find_spec('harness') else None; "
             "print(json.dumps([w and w.origin, [n for n in ('jinja2', 'git', 'uv') if u.find_spec(n)]]))")
    script = f"""
import json, os, subprocess, sys
import yolov5_export_matrix  # the installed launcher: puts the harness's own directory on sys.path
from harness.envs import proc
root = proc.HARNESS_ROOT
site = root.parent.parent
seen = {{}}
for name, path in (("harness_root", root), ("site_packages", site)):
    # -S: the interpreter's own site-packages stay out, as in an env without the harness's packages
    out = subprocess.run([sys.executable, "-S", "-c", {probe!r}], env=proc.child_env(pythonpath=str(path)),
                         capture_output=True, text=True, cwd="/")
    seen[name] = json.loads(out.stdout) if out.returncode == 0 else out.stderr
print(json.dumps({{"root": str(root), "listing": sorted(os.listdir(root)), "site": str(site), "seen": seen}}))
"""
    proc = run(installed / "python", "-c", script, cwd="/")
    assert proc.returncode == 0, proc.stderr
    import json

    facts = json.loads(proc.stdout)
    assert Path(facts["root"]).parent.name == "yolov5_export_matrix"
    assert Path(facts["root"]).parent.parent.name == "site-packages"
    assert facts["listing"] == ["harness"]
    worker_file, leaked = facts["seen"]["harness_root"]
    assert worker_file == str(Path(facts["root"]) / "harness" / "worker" / "__init__.py")
    assert leaked == []
    # The control: had the wheel put harness/ straight into site-packages, this is what workers would have seen.
    assert set(facts["seen"]["site_packages"][1]) == {"jinja2", "git", "uv"}


def test_the_wheel_adds_no_top_level_harness(installed: Path, tmp_path: Path) -> None:
    """An unrelated PyPI distribution is called `harness`: the wheel's one top-level name is yolov5_export_matrix,
    and a Python of that venv that does not import it finds no `harness` (no .pth puts one on the path)."""
    listing = run(installed / "python", "-c", "import importlib.metadata as m; print(*sorted({str(f).split('/')[0] "
                  "for f in m.distribution('yolov5-export-matrix').files}))")
    tops = {name for name in listing.stdout.split() if not name.endswith((".dist-info", "..")) and name != "bin"}
    assert tops == {"yolov5_export_matrix"}, listing.stdout
    bare = run(installed / "python", "-c", "import importlib.util as u; print(u.find_spec('harness'))", cwd=tmp_path)
    assert bare.stdout.strip() == "None", bare.stdout + bare.stderr
    launched = run(installed / "python", "-m", "yolov5_export_matrix", "--help", cwd=tmp_path)
    assert launched.stdout.startswith("usage: python -m yolov5_export_matrix [-h]"), launched.stdout[:200]


def test_an_unexpected_exception_exits_3_not_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) \
        -> None:
    """1 is the gate's "regression": a crash must not read as one."""

    def add_crash(subparsers) -> None:
        parser = subparsers.add_parser("crash")
        parser.set_defaults(handler=lambda args: {}["missing"])

    monkeypatch.setattr("harness.__main__.SUBCOMMANDS", (*SUBCOMMANDS, add_crash))
    assert main(["crash"]) == EXIT_INTERNAL_ERROR == 3
    err = capsys.readouterr().err
    assert "KeyError: 'missing'" in err and "internal error in `crash`" in err


def test_help_says_run_exits_0_with_broken_cells() -> None:
    top = run(sys.executable, "-m", "harness", "--help", cwd=ROOT).stdout
    assert "exit codes:" in top and "for `run` also when cells are broken" in top
    sub = run(sys.executable, "-m", "harness", "run", "--help", cwd=ROOT).stdout
    assert "also when some are broken" in " ".join(sub.split())


def test_the_installed_cli_says_its_own_name(installed: Path, tmp_path: Path) -> None:
    """Usage lines and the fixes in error messages name the command as the user called it."""
    bare = run(installed / "yolov5-export-matrix", cwd=tmp_path)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: yolov5-export-matrix [-h] [--version] COMMAND")
    sub = run(installed / "yolov5-export-matrix", "run", "--help", cwd=tmp_path)
    assert sub.stdout.startswith("usage: yolov5-export-matrix run ") and "python -m" not in sub.stdout
    missing = run(installed / "yolov5-export-matrix", "report", "--reports", tmp_path / "none", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("written by `yolov5-export-matrix run`"), missing.stderr
    written = run(installed / "yolov5-export-matrix", "init", cwd=tmp_path)
    assert "run `yolov5-export-matrix run --env all`" in written.stdout, written.stderr
    # From a checkout, the same messages say how that is called.
    here = run(sys.executable, "-m", "harness", "report", "--reports", tmp_path / "none", cwd=ROOT)
    assert here.stderr.strip().endswith("written by `python -m harness run`")
    assert run(sys.executable, "-m", "harness", cwd=ROOT).stderr.startswith("usage: python -m harness [-h]")


def test_the_wheel_carries_the_license(installed: Path) -> None:
    meta = run(installed / "python", "-c", "import importlib.metadata as m; d = m.distribution('yolov5-export-matrix');"
               "print(d.metadata['License-Expression']); print(*[f for f in d.files if f.name == 'LICENSE'])")
    expression, license_file = meta.stdout.split("\n")[:2]
    assert expression == PYPROJECT["project"]["license"] == "Apache-2.0"
    assert license_file.endswith("licenses/LICENSE")
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_the_changelog_names_this_release_first() -> None:
    """docs/releasing.md: the newest release heading of CHANGELOG.md is the version --version prints, below an
    Unreleased section."""
    import re

    headings = re.findall(r"(?m)^## (\S+)", (ROOT / "CHANGELOG.md").read_text())
    assert headings[:2] == ["Unreleased", harness.__version__], headings


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))  # type: ignore[union-attr]
def test_every_subcommand_lists_its_exit_codes(command: str) -> None:
    text = run(sys.executable, "-m", "harness", command, "--help", cwd=ROOT).stdout
    table = text[text.index("exit codes:"):].splitlines()
    codes = [line.split()[0] for line in table[1:] if line.strip()]
    assert codes == (["0", "1", "2", "3", "130"] if command in ("gate", "upgrade") else ["0", "2", "3", "130"])
