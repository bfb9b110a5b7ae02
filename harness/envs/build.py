"""Pinned environments: one venv per [envs.NAME] table, built once into the cache and reused while its pins hold.

Why not nox's own venvs: nox keeps them in the checkout (.nox/), so every clean clone (CI, a colleague) would
reinstall several GB of torch. Here a venv lives under the cache, keyed by interpreter + pins, and a marker written
last makes an interrupted build count as absent. uv builds it when present (fast, with a shared wheel cache);
plain venv + pip otherwise.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from harness.config import EnvSpec
from harness.envs import proc
from harness.errors import EnvError
from harness.files import write_json

MARKER = "harness-env.json"


def uv_binary() -> str | None:
    """uv on PATH, else the one installed beside the harness (the `uv` package; pipx keeps its venv off PATH)."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    try:
        return str(find_uv_bin())
    except FileNotFoundError:
        return None


def python_candidates(version: str) -> list[str]:
    """Where an interpreter for ``version`` ("3.11") may live, most specific first.

    pyenv installs are found without the user editing PATH; $YOLOV5_MATRIX_PYTHON_<X_Y> names one explicitly.
    """
    found: list[str] = []
    override = os.environ.get("YOLOV5_MATRIX_PYTHON_" + version.replace(".", "_"))
    if override:
        found.append(override)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    # Highest patch release first: 3.11.10 sorts after 3.11.7 only numerically.
    versions = glob.glob(os.path.join(pyenv_root, "versions", version + ".*", "bin", "python"))
    found += sorted(versions, key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".") if x.isdigit()],
                    reverse=True)
    found += [p for p in (shutil.which("python" + version), f"/usr/bin/python{version}") if p]
    found += _uv_managed(version)
    return list(dict.fromkeys(found))


def _uv_managed(version: str) -> list[str]:
    """A Python installed by ``uv python install X.Y`` (kept outside PATH), as ``uv python find`` reports it."""
    uv = uv_binary()
    if not uv:
        return []
    out = proc.capture([uv, "python", "find", "--managed-python", version], timeout=30)
    return [out.stdout.strip()] if out.returncode == 0 and out.stdout.strip() else []


def find_python(version: str, owner: str) -> str:
    """An interpreter whose version really is ``version`` (a shim may exist but point elsewhere); ``owner`` names
    who needs it in the error ("env 'py38-torch1.8'", "tpu-mlir env")."""
    looked = python_candidates(version)
    for path in looked:
        out = proc.capture([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=30)
        if out.returncode == 0 and out.stdout.strip() == version:
            return path
    raise EnvError(
        f"{owner}: no Python {version} found (looked at: {', '.join(looked) or 'nothing'}) — "
        f"install it (pyenv install {version}, or uv python install {version}) "
        f"or set YOLOV5_MATRIX_PYTHON_{version.replace('.', '_')}=/path/to/python{version}")


def env_dir(spec: EnvSpec, cache: Path) -> Path:
    return cache / "envs" / f"{spec.name}-{spec.key()}"


def env_python(spec: EnvSpec, cache: Path) -> Path:
    return env_dir(spec, cache) / "bin" / "python"


def _run(cmd: list[str], owner: str, log: Path, fix: str) -> None:
    """Run one install step, appending its output to the build log; a failure names the package if it can."""
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        done = proc.capture(cmd, timeout=None, merge=True)  # an install takes what it takes (a few GB cold)
        fh.write(done.stdout)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        # uv explains a conflict on a "Because ..." line; pip names the missing distribution on its last lines.
        markers = ("Because", "No matching distribution", "Could not find", "not found in the package registry")
        culprit = next((line.removeprefix("cause: ") for line in lines if any(m in line for m in markers)),
                       lines[-1] if lines else "no output")
        raise EnvError(f"{owner}: install failed: {culprit[:300]} — {fix} (full log: {log})")


def build_venv(target: Path, interpreter: str, requirements: list[str], owner: str, fix: str,
               log: Callable[[str], None]) -> Path:
    """Create a venv at ``target`` from ``interpreter`` and install ``requirements`` (uv when present, else venv +
    pip), saying each step as it starts; returns the venv's python. The one builder of every env: the matrix's and
    the tpu-mlir one. The caller writes its marker last, so an interrupted build counts as absent."""
    if target.exists():
        shutil.rmtree(target)  # a build that never wrote its marker: start over
    target.parent.mkdir(parents=True, exist_ok=True)
    build_log = target.parent / f"{target.name}.log"
    build_log.write_text("")
    python = target / "bin" / "python"
    uv = uv_binary()
    start = time.monotonic()
    log(f"{owner}: [1/2] creating {target} with {'uv' if uv else 'venv'} from {interpreter} (log: {build_log})")
    if uv:
        _run([uv, "venv", "--quiet", "--python", interpreter, str(target)], owner, build_log, fix)
    else:
        _run([interpreter, "-m", "venv", str(target)], owner, build_log, fix)
    log(f"{owner}: [2/2] installing {len(requirements)} requirements with {'uv' if uv else 'pip'} "
        f"({time.monotonic() - start:.0f} s so far; a cold cache downloads GBs): {' '.join(requirements)}")
    if uv:
        # No --compile-bytecode: it compiles all of torch (minutes of CPU per env, most of a warm re-creation); the
        # modules a warm process preloads are compiled once, on first use (harness/envs/bytecode.py).
        _run([uv, "pip", "install", "--python", str(python), *requirements], owner, build_log, fix)
    else:
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements], owner, build_log,
             fix)
    log(f"{owner}: built in {time.monotonic() - start:.0f} s")
    return python


_CORE = ("torch", "torchvision", "onnx", "onnxruntime", "numpy")
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _requirement_name(line: str) -> str | None:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def derive(spec: EnvSpec, pins: dict[str, str]) -> EnvSpec:
    """A sibling of ``spec`` with some packages pinned to other exact versions (a pin workaround, e.g. numpy).

    Named ``<env>+<pkg>==<version>``; its venv is keyed by its pins like any env's, so a sibling whose pins equal
    another env's shares that venv, and it is built once and reused."""
    changes: dict[str, str] = {}
    extra = list(spec.extra)
    for package, version in sorted(pins.items()):
        name = canonicalize_name(package)
        if name in _CORE:
            changes[name] = version
        else:
            extra = [line for line in extra if _requirement_name(line) != name] + [f"{package}=={version}"]
    label = "+".join(f"{p}=={v}" for p, v in sorted(pins.items()))
    return dataclasses.replace(spec, name=f"{spec.name}+{label}", extra=tuple(extra), **changes)


# Packages a ref's requirements.txt asks for that the matrix's envs do not carry, and what the harness installs for
# them in the env that runs that ref (the same env, extended): upstream master imports `ultralytics` (from
# 2026-08-21); 8.4.190 with ultralytics-thop is what its cells were measured with on py311-torch2.14.
REF_PACKAGES: dict[str, tuple[str, ...]] = {
    "ultralytics": ("ultralytics==8.4.190", "ultralytics-thop"),
}


def ref_packages(tree: Path, spec: EnvSpec) -> dict[str, tuple[str, ...]]:
    """The REF_PACKAGES the ref at ``tree`` requires (its requirements.txt) and ``spec`` lacks."""
    try:
        lines = (tree / "requirements.txt").read_text(errors="replace").splitlines()
    except OSError:
        return {}
    wanted = {_requirement_name(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()}
    present = {_requirement_name(line) for line in spec.extra}
    return {name: pins for name, pins in REF_PACKAGES.items() if name in wanted and name not in present}


def extend(spec: EnvSpec, packages: dict[str, tuple[str, ...]]) -> EnvSpec:
    """``spec`` with the pins of ``packages`` added to its extra: same name (its cells keep their ids; their results
    list the pins), its own venv (keyed by its pins like any env's)."""
    return dataclasses.replace(spec, extra=(*spec.extra, *(pin for pins in packages.values() for pin in pins)))


def ensure_env(spec: EnvSpec, cache: Path, *, log: Callable[[str], None] = print) -> Path:
    """Return the env's python, building the venv first unless an identical one is already complete. Threads of
    one run that need the same venv (a pin workaround's sibling env) wait for one build."""
    target = env_dir(spec, cache)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(target, threading.Lock())
    with lock:
        return _ensure_env(spec, cache, target, log)


def freeze(python: Path) -> list[str]:
    """Every distribution installed in the env, as ``name==version`` (the resolution the extras got)."""
    uv = uv_binary()
    cmd = [uv, "pip", "freeze", "--python", str(python)] if uv else [str(python), "-m", "pip", "freeze"]
    out = proc.capture(cmd, timeout=300)
    return [line for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _ensure_env(spec: EnvSpec, cache: Path, target: Path, log: Callable[[str], None]) -> Path:
    marker = target / MARKER
    python = target / "bin" / "python"
    if marker.is_file() and python.exists():
        return python
    owner = f"env '{spec.name}'"
    interpreter = find_python(spec.python, owner)
    requirements = spec.requirements()
    build_venv(target, interpreter, requirements, owner, f"fix the pins in matrix.toml [envs.{spec.name}]", log)
    write_json(marker, {"name": spec.name, "python": spec.python, "interpreter": interpreter,
                        "requirements": requirements, "installer": "uv" if uv_binary() else "pip",
                        "harness_python": sys.version.split()[0], "installed": freeze(python)})
    return python
