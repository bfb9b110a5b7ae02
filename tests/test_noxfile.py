"""The nox sessions as a user calls them, with the real nox: what `nox -l` lists (matrix envs by torch version, one
whole line per session), what `nox -s gate` exits with (the harness's own codes, not nox's flattened 1), and a
`matrix` session that leaves reports/index.html behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def nox(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real nox (the one installed next to pytest), with this interpreter's bin first on PATH (uv for nox's
    uv backend)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("NOX_CURRENT_SESSION", None)  # we may run inside `nox -s tests`
    return subprocess.run([sys.executable, "-m", "nox", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def listed(cwd: Path = ROOT) -> list[dict]:
    proc = nox("-l", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_matrix_sessions_are_ordered_by_torch_version_and_tagged_with_their_python() -> None:
    envs = tomllib.loads((ROOT / "matrix.toml").read_text())["envs"]
    sessions = [s for s in listed() if s["name"] == "matrix"]
    names = [s["call_spec"]["env"] for s in sessions]
    assert names == sorted(envs, key=lambda name: Version(envs[name]["torch"]))
    assert names != sorted(envs)  # the default envs do differ from alphabetical (py310 < py38): the test means it
    assert [s["session"] for s in sessions] == [f"matrix({n})" for n in names]
    assert [s["tags"] for s in sessions] == [[f"python{envs[n]['python']}"] for n in names]


def test_order_is_numeric_not_textual(tmp_path: Path) -> None:
    """A matrix.toml whose names and torch versions sort differently as text: 1.9 < 1.10 < 2.0."""
    for name in ("noxfile.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "matrix.toml").write_text(
        '[envs.a]\npython = "3.11"\ntorch = "2.0.1"\n'
        '[envs.b]\npython = "3.9"\ntorch = "1.10.2"\n'
        '[envs.c]\npython = "3.8"\ntorch = "1.9.0"\n'
        '[envs.d]\npython = "3.11"\ntorch = "not-a-version"\n')
    names = [s["call_spec"]["env"] for s in listed(tmp_path) if s["name"] == "matrix"]
    assert names == ["c", "b", "a", "d"]


def test_every_summary_is_the_whole_first_paragraph_of_its_docstring() -> None:
    """nox -l shows a docstring's first line only: each session's first paragraph must be that one line."""
    text = nox("-l")
    assert text.returncode == 0, text.stderr
    # "* matrix(py38-torch1.8) [python3.8] -> summary" (selected by default) or "- gate -> summary"
    summaries = dict(re.findall(r"^[*-] (\S+)(?: \[[^]]*\])? -> (.*)$", text.stdout, re.MULTILINE))
    assert {"report", "gate", "upgrade", "tests", "mirror", "tpu_mlir", "bench"} <= set(summaries)
    assert sum(name.startswith("matrix(") for name in summaries) == len(tomllib.loads(
        (ROOT / "matrix.toml").read_text())["envs"])
    one_matrix = next(name for name in summaries if name.startswith("matrix("))  # they share one docstring
    for name, summary in summaries.items():
        if name.startswith("matrix(") and name != one_matrix:
            assert summary == summaries[one_matrix]
            continue
        usage = nox("--usage", name)
        assert usage.returncode == 0, usage.stderr
        first_paragraph = " ".join(usage.stdout.strip().split("\n\n")[0].split())
        assert summary == first_paragraph, name
        assert summary.endswith((".", ")")), name
        assert len(summary) <= 110, name  # one line on a terminal next to the session's name


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nox-gate") / "baseline.json"
    proc = nox("-s", "gate", "--", "--reports", str(DATA), "--baseline", str(path), "--write-baseline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


@pytest.mark.parametrize(("args", "code", "says"), [
    ((), 0, "no change in 12 cell pair(s) — nothing to edit"),
    (("--ref", "v6.1=v6.2"), 1, "FAIL  [2] output count 4 → 1"),
    (("--ref", "v6.1"), 2, "error: gate: --ref 'v6.1': expected OLD=NEW"),
])
def test_nox_gate_exits_with_the_harness_code(baseline: Path, args: tuple[str, ...], code: int, says: str) -> None:
    proc = nox("-s", "gate", "--", "--reports", str(DATA), "--baseline", str(baseline), *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert says in proc.stdout + proc.stderr
    if code:
        assert f"python -m harness gate exited {code}: nox exits {code} too" in proc.stderr


def test_nox_upgrade_exits_2_on_a_usage_error() -> None:
    """`nox -s upgrade` keeps the harness's code too: --from equal to --to is a usage error (2), not nox's 1."""
    proc = nox("-s", "upgrade", "--", "--from", "v7.0", "--to", "v7.0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: upgrade: --from and --to are both v7.0" in proc.stdout + proc.stderr
    assert "python -m harness upgrade exited 2: nox exits 2 too" in proc.stderr


def test_a_missing_baseline_is_a_usage_error_through_nox(tmp_path: Path) -> None:
    proc = nox("-s", "gate", "--", "--reports", str(DATA), "--baseline", str(tmp_path / "none.json"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert re.search(r"error: gate: baseline .*none\.json does not exist", proc.stdout)  # nox merges stderr


def test_other_sessions_flatten_to_1_as_the_readme_says(tmp_path: Path) -> None:
    """`report` with no results: the harness exits 2, nox (no run_harness there) exits 1."""
    proc = nox("-s", "report", "--", "--reports", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: no results under" in proc.stdout


@pytest.mark.slow
@pytest.mark.torch
def test_matrix_session_leaves_the_report_behind(mirror_repo: Path, env_python: Path, quick_env: str,
                                                  tmp_path: Path) -> None:
    """The README's narrowed first command, through nox: one env, one ref, variant 3, onnx -> reports/index.html;
    rerun with nothing changed it keeps the page, and a newer result makes it render again."""
    reports = tmp_path / "reports"

    def narrowed_matrix(timeout: float) -> subprocess.CompletedProcess[str]:
        return nox("-s", f"matrix({quick_env})", "--", "--refs", "v7.0", "--variants", "3", "--formats", "onnx",
                   "--repo", str(mirror_repo), "--reports", str(reports), timeout=timeout)

    proc = narrowed_matrix(1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((reports / "results").glob("*.json"))) == 1
    page = (reports / "index.html").read_text()
    assert "v7.0" in page and quick_env in page
    assert "<testcase" in (reports / "junit.xml").read_text()
    assert re.search(r"report: 1 cells \(1 (works|workaround)\)", proc.stdout), proc.stdout[-2000:]
    # Again with nothing changed: the cell is kept and so is the page (rendering it again would write the same).
    rendered = (reports / "index.html").stat().st_mtime_ns
    again = narrowed_matrix(600)
    assert again.returncode == 0 and "unchanged, kept" in again.stdout + again.stderr
    assert "index.html is newer than every result" in again.stdout + again.stderr, again.stdout[-2000:]
    assert (reports / "index.html").stat().st_mtime_ns == rendered
    # A result newer than the page (a compile verdict joined, a merged shard): rendered again.
    result = next((reports / "results").glob("*.json"))
    os.utime(result, ns=(rendered + 10**9, rendered + 10**9))
    third = narrowed_matrix(600)
    assert third.returncode == 0 and "report: 1 cells" in third.stdout, third.stderr[-2000:]
    assert (reports / "index.html").stat().st_mtime_ns > rendered
