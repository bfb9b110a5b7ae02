"""yolov5-export-matrix: `nox` runs every env of matrix.toml and refreshes reports/index.html after each one.

`nox -l` lists the sessions (matrix envs oldest torch first); `nox --usage SESSION` prints one in full.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import nox
from packaging.version import InvalidVersion, Version

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: nox's own interpreter reads the env names with tomli
    import tomli as tomllib

# CommandFailed.return_code (how run_harness learns the code nox flattens to 1) appeared in nox 2026.07.11.
nox.needs_version = ">=2026.7.11"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["matrix"]

HERE = Path(__file__).parent
PYPROJECT = nox.project.load_toml(HERE / "pyproject.toml")
# The codes `python -m harness gate` and `upgrade` document (docs/cli.md): 1 a failing change, 2 a usage
# error, 3 an internal error; run_harness carries them out of nox unchanged.
GATE_EXIT_CODES = (1, 2, 3)
UPGRADE_EXIT_CODES = GATE_EXIT_CODES
# When this nox process started: the clock of the whole matrix for the progress lines' "left in all" estimate.
STARTED = time.time()


def matrix_envs(path: Path = HERE / "matrix.toml") -> list[tuple[str, str]]:
    """(env name, python version) of every env in matrix.toml, oldest torch first (by `packaging.version`).

    A broken file still lists one session, "none", so `nox -s matrix` runs and the harness reports the config error
    with its line and key (an env whose torch is not a version sorts last, by name).
    """
    try:
        envs = tomllib.loads(path.read_text()).get("envs", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"noxfile: cannot read {path.name} ({exc}); `nox -s matrix` will show the error", file=sys.stderr)
        return [("none", "")]

    def torch_first(name: str) -> tuple[int, Version, str]:
        try:
            return 0, Version(str(envs[name].get("torch", ""))), name
        except (InvalidVersion, AttributeError):
            return 1, Version("0"), name

    ordered = sorted(envs, key=torch_first)
    return [(name, str(envs[name].get("python", "")) if isinstance(envs[name], dict) else "") for name in ordered] \
        or [("none", "")]


def install_harness(session: nox.Session) -> None:
    """The harness's own dependencies (pyproject.toml [project] dependencies), not the harness itself: sessions run it
    from this checkout, so an edit needs no reinstall and env-side workers get PYTHONPATH = this directory. In a
    reused venv this costs 0.06 s; building and installing the project instead took 4.3-5.0 s per session (uv)."""
    session.install(*PYPROJECT["project"]["dependencies"])


def run_harness(session: nox.Session, *args: str, exit_codes: Collection[int] = ()) -> None:
    """Run `python -m harness ARGS`; when it exits with one of `exit_codes`, nox exits with that same code.

    nox marks a session whose command exits non-zero as failed and then exits 1 whatever the code was
    (nox/tasks.py final_reduce), so a gate's "regression" (1) and "usage error" (2) would look alike. A code listed
    here is raised as SystemExit, which nox's session runner does not catch (it catches Exception): nox stops at
    once with that code, printing no summary and running no later session. Other codes fail the session as usual.
    """
    try:
        session.run("python", "-m", "harness", *args)
    except nox.command.CommandFailed as exc:
        code = getattr(exc, "return_code", None)
        if code in exit_codes:
            session.warn(f"python -m harness {args[0]} exited {code}: nox exits {code} too")
            raise SystemExit(code) from None
        raise


def matrix_position(session: nox.Session) -> str | None:
    """``k/n``: this env among the matrix sessions this nox invocation runs (``nox -s matrix``: all of them;
    ``nox -s "matrix(<env>)"``: 1/1), for harness/run/progress.py. nox has no public API for the selected sessions, so
    this reads its manifest and says nothing (None) when that changes shape: the estimate is a courtesy."""
    manifest = getattr(getattr(session, "_runner", None), "manifest", None)
    try:
        done = [s for s in manifest._consumed if s.name == "matrix"]  # type: ignore[union-attr]
        queued = [s for s in manifest._queue if s.name == "matrix"]  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        return None
    return f"{len(done)}/{len(done) + len(queued)}" if done else None


def _reports_and_config(posargs: Sequence[str]) -> tuple[str, list[str]]:
    """The `--reports DIR` a run writes to (default reports) and its `--config` arguments, read from the posargs."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--config", default=None)
    known, _ = parser.parse_known_args(list(posargs))
    return known.reports, ["--config", known.config] if known.config else []


def refresh_report(session: nox.Session) -> None:
    """Rewrite <reports>/index.html + junit.xml from every result so far, when something it shows changed (the
    harness's `report --if-changed` decides; `nox -s report` always renders)."""
    reports, config = _reports_and_config(session.posargs)
    session.run("python", "-m", "harness", "report", "--reports", reports, *config, "--if-changed")


@nox.session
@nox.parametrize("env", [nox.param(name, id=name, tags=[f"python{py}"] if py else []) for name, py in matrix_envs()])
def matrix(session: nox.Session, env: str) -> None:
    """Run this env's cells, then refresh reports/index.html (posargs go to `python -m harness run`).

    `nox -s matrix` runs every env (`nox`, the default, too), `nox -s "matrix(<env>)"` one. Posargs go to
    `python -m harness run`: --refs v6.1,v7.0 --variants 1,3 --formats onnx --repo URL --force --fetch --shard K/N
    --reports DIR. The report is rewritten after each env (also when the run failed; kept when nothing it shows
    changed), so it can be opened while the next env runs. When matrix.toml [compile] enabled = true, the tpu-mlir
    check of the env's ONNX exports follows.
    The session fails (nox exits 1) when the harness cannot run the env (exit 2: config, interpreter, env build);
    broken cells are results, not failures.
    """
    install_harness(session)
    reports, config = _reports_and_config(session.posargs)
    position = matrix_position(session)
    outer = {"YOLOV5_MATRIX_PROGRESS": f"{STARTED:.0f} {position}"} if position else {}
    try:
        session.run("python", "-m", "harness", "run", "--env", env, *session.posargs, env=outer)
        session.run("python", "-m", "harness", "compile", "--env", env, "--if-enabled", "--reports", reports, *config)
    except nox.command.CommandFailed:
        refresh_report(session)  # what finished before the failure is worth a look too
        raise
    refresh_report(session)


@nox.session
def report(session: nox.Session) -> None:
    """Render every result under reports/ into reports/index.html + junit.xml (matrix does this after each env).

    Reads every results/ folder below --reports (any number of shards, machines or CI jobs). Posargs: --reports DIR,
    --from DIR (repeatable), --out FILE, --junit FILE, --config FILE.
    """
    install_harness(session)
    session.run("python", "-m", "harness", "report", *session.posargs)


@nox.session
def gate(session: nox.Session) -> None:
    """Compare the results with a baseline; exits 0 ok, 1 regression, 2 usage error (`-- --baseline FILE`).

    `nox -s gate -- --baseline FILE` compares; add --write-baseline to save one; --ref OLD=NEW, --env OLD=NEW map
    cells. nox exits with the harness's own code (see run_harness): 0 no failing change, 1 a failing change,
    2 a usage error, 3 an internal error. See docs/upgrade.md.
    """
    install_harness(session)
    run_harness(session, "gate", *session.posargs, exit_codes=GATE_EXIT_CODES)


@nox.session
def upgrade(session: nox.Session) -> None:
    """Ref A -> ref B (or env X -> Y, or both): one group per change, where each comes from, the edits to make.

    Runs what is missing of both sides, groups the changes, finds each failing group's first commit or first env
    (probes are cached cells) and writes reports/upgrade.md, upgrade.json and the "Upgrade A -> B" section of
    index.html. Posargs: --from A --to B, --envs, --variants, --formats, --from-env X --to-env Y (a torch upgrade;
    with --to too: both at once), --accept-workarounds, --no-bisect, --no-pin-names, --format json, --repo,
    --reports. nox exits with the harness's own code (see run_harness):
    0 no failing group, 1 failing groups, 2 a usage error, 3 an internal error. See docs/upgrade.md.
    """
    install_harness(session)
    run_harness(session, "upgrade", *session.posargs, exit_codes=UPGRADE_EXIT_CODES)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (real git repos, real exports in the quick env, real ONNX Runtime, real chromium).

    Installs the [dependency-groups] tests of pyproject.toml (pytest, playwright driving the system chromium that
    .ci/run installs, actionlint for the workflow, nox for the session tests). Posargs go to pytest.
    """
    install_harness(session)
    session.install(*nox.project.dependency_groups(PYPROJECT, "tests"))
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def cache(session: nox.Session) -> None:
    """List what the harness's cache holds, with sizes; `nox -s cache -- --prune [--older-than DAYS]` prunes it."""
    install_harness(session)
    session.run("python", "-m", "harness", "cache", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and types: ruff (pyproject.toml's rules), mypy on harness/, env-side code as Python 3.8.

    mypy is strict on the harness's own code; env-side code is checked inside its unannotated functions, against the
    wire types of harness/worker/protocol.py.

    Env-side code (harness/worker/, harness/compile/envside.py, harness/targets/envside.py, benchmarks/floor.py) runs
    in old interpreters: ruff checks it as 3.8 code (per-file-target-version) and a real Python 3.8, when the machine
    has one, compiles it.
    Posargs go to ruff (e.g. --fix).
    """
    session.install(*PYPROJECT["project"]["dependencies"], *nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "harness", "install", "tests", "benchmarks", "noxfile.py", *session.posargs)
    session.run("mypy")
    envside = [*sorted(str(p) for p in (HERE / "harness" / "worker").glob("*.py")),
               str(HERE / "harness" / "compile" / "envside.py"), str(HERE / "harness" / "targets" / "envside.py"),
               str(HERE / "benchmarks" / "floor.py")]
    python38 = session.run("python", "-c",
                           "from harness.envs.build import python_candidates as c; print(*c('3.8')[:1])",
                           silent=True, external=True) or ""
    if python38.strip():
        session.run(python38.strip(), "-c", "import sys\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')",
                    *envside, external=True)
    else:
        session.warn("no Python 3.8 here: env-side code checked by ruff's 3.8 rules only")


@nox.session
def mirror(session: nox.Session) -> None:
    """Build the offline stand-in repository from PyPI's `yolov5` releases (see docs/offline.md).

    Posargs: --dest DIR (default: <cache>/mirror).
    """
    install_harness(session)
    session.run("python", "-m", "harness", "mirror", *session.posargs)


@nox.session
def tpu_mlir(session: nox.Session) -> None:
    """Compile the ONNX and TorchScript exports with tpu-mlir for a bm1684x; compare the bmodel with their runtime.

    Takes the [compile] variants (default 3 and native) and formats (onnx, torchscript), runs the bmodel in tpu-mlir's
    simulator and joins the verdict into each result. Builds the tpu-mlir env (Python 3.10) on first use. Posargs:
    --refs v7.0 --variants 3 --formats torchscript --quantize F32,F16 --force --keep.
    """
    install_harness(session)
    session.run("python", "-m", "harness", "compile", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Time the harness against the floor (the ref's own exporter) -> table + reports/bench.json.

    Also times a no-change rerun of the whole matrix and env creation. Posargs: see benchmarks/bench.py --help.
    """
    install_harness(session)
    session.run("python", str(HERE / "benchmarks" / "bench.py"), *session.posargs)
