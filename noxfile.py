"""Sessions: `nox -s matrix` (every env of matrix.toml, one session each), `nox -s tests`, `nox -s mirror`,
`nox -s report`, `nox -s gate`, `nox -s tpu_mlir` (compile check, harness/compile/).

Each session gets a small venv with the harness's own dependencies (uv when present, virtualenv otherwise; reused
between runs). The heavy per-env venvs (torch & co.) are built by the harness itself into its cache, so a clean clone
or CI reuses them: see harness/envs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: nox's own interpreter reads the env names with tomli
    import tomli as tomllib

HERE = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["matrix"]


def env_names() -> list[str]:
    """Env names from matrix.toml, for one session per env; a broken file still lists sessions (the harness run
    then reports the config error with its line and key)."""
    try:
        return sorted(tomllib.loads((HERE / "matrix.toml").read_text()).get("envs", {})) or ["none"]
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"noxfile: cannot read matrix.toml ({exc}); `nox -s matrix` will show the error", file=sys.stderr)
        return ["none"]


def install_harness(session: nox.Session) -> None:
    session.install("-r", str(HERE / "requirements.txt"))


@nox.session
@nox.parametrize("env", env_names(), ids=env_names())
def matrix(session: nox.Session, env: str) -> None:
    """Run every cell of one env: `nox -s matrix` runs all envs, `nox -s "matrix(<env>)"` one. Posargs narrow it:
    --refs v6.1,v7.0 --variants 1,3 --formats onnx --repo URL --force --fetch."""
    install_harness(session)
    session.run("python", "-m", "harness", "run", "--env", env, *session.posargs)
    # The tpu-mlir compile check of this env's ONNX exports, when matrix.toml [compile] enabled = true.
    session.run("python", "-m", "harness", "compile", "--env", env, "--if-enabled")


@nox.session
def bench(session: nox.Session) -> None:
    """Time the harness against the floor (the ref's own exporter + one inference per backend), a no-change rerun
    of the whole matrix, and env creation -> table + reports/bench.json. Posargs: see benchmarks/bench.py --help."""
    install_harness(session)
    session.run("python", str(HERE / "benchmarks" / "bench.py"), *session.posargs)


@nox.session
def tpu_mlir(session: nox.Session) -> None:
    """Compile the ONNX exports of the [compile] variants (default 3 and native) with tpu-mlir for a bm1684x,
    run the bmodel in its simulator, compare with ONNX Runtime and join the verdict into each result. Builds the
    tpu-mlir env (Python 3.10) on first use. Posargs: --refs v7.0 --variants 3 --quantize F32,F16 --force --keep."""
    install_harness(session)
    session.run("python", "-m", "harness", "compile", *session.posargs)


@nox.session
def mirror(session: nox.Session) -> None:
    """Build the offline stand-in repository from PyPI's `yolov5` distributions (see README, Offline source)."""
    install_harness(session)
    session.run("python", "-m", "harness", "mirror", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: real git repos, real exports in the quick env, real ONNX Runtime."""
    install_harness(session)
    # playwright drives the system chromium (/usr/bin/chromium, installed by .ci/run) for the report's browser test.
    session.install("pytest>=8", "playwright>=1.40")
    session.run("pytest", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Every result JSON under reports/ (any number of shards or machines) -> reports/index.html + junit.xml.
    Posargs: --reports DIR, --from DIR (repeatable), --out FILE, --junit FILE."""
    install_harness(session)
    session.run("python", "-m", "harness", "report", *session.posargs)


@nox.session
def gate(session: nox.Session) -> None:
    """Compare the results with a baseline: `nox -s gate -- --baseline FILE` exits 1 on a regression;
    add --write-baseline to save one. See README, "Upgrading: the gate"."""
    install_harness(session)
    session.run("python", "-m", "harness", "gate", *session.posargs)
