"""The tpu-mlir env: a Python 3.10 venv with tpu_mlir from PyPI, built once into the cache and repaired where the
wheel does not run as shipped.

Not an [envs.NAME] of matrix.toml: its pins are tpu-mlir's, not a torch matrix axis, and it needs a post-install
repair (below). The interpreter lookup is harness/envs/build.py's.

What the wheel needs that it does not declare or that breaks (measured on Debian 12, tpu_mlir 1.30.2):
- tpu_mlir/__init__.py imports ``pkg_resources``, which setuptools 81 removed;
- its tools import ``psutil`` (undeclared), the TorchScript front end ``torchvision`` and the ONNX front end
  ``torch`` (the ``[torch]`` extra pins torch 2.11.0, a 4.4 GB CUDA build; any torch serves, so the one the matrix
  env caches is taken, with its torchvision);
- it pins opencv-python-headless==4.8.0.74, a yanked release: uv installs a yanked file only when the request pins
  it exactly, so the pin is repeated here;
- it ships Ubuntu 22.04's glibc 2.35 (libc, libm, libpthread) in tpu_mlir/lib/third_party/ and puts that folder
  first on LD_LIBRARY_PATH, so on a system with a newer glibc every tool dies with "GLIBC_2.36 not found" (the
  system's own libraries, e.g. libexpat, need the newer one). ``fix_bundled_glibc`` moves those three files aside
  when, and only when, the system glibc is newer, and says so. Moving renames the venv's hard link; uv's cache copy
  is untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.envs.build import build_venv, find_python, uv_binary
from harness.files import write_json

TOOL = "tpu-mlir"
TOOL_VERSION = "1.30.2"
PYTHON = "3.10"  # the only Python tpu_mlir 1.30.2 publishes wheels for
REQUIREMENTS: tuple[str, ...] = (
    f"tpu_mlir[onnx]=={TOOL_VERSION}",   # [onnx]: onnx 1.14.1, onnxruntime 1.16.3, onnxsim 0.4.17
    "opencv-python-headless==4.8.0.74",  # tpu_mlir's own pin, a yanked release (see module docstring)
    "psutil",                            # imported by its tools, not declared
    "torch==2.14.1",                     # imported by its ONNX front end; CUDA libraries shared with the matrix env
    "torchvision==0.29.1",               # imported by its TorchScript front end (TorchConverter); torch 2.14's pair
    "setuptools<81",                     # tpu_mlir/__init__.py imports pkg_resources
)
# The glibc libraries the wheel bundles; ld.so, libdl and librt are left alone (not bundled / not the cause).
GLIBC_LIBS: tuple[str, ...] = ("libc.so.6", "libm.so.6", "libpthread.so.0")
MOVED_DIR = "third_party.glibc-moved"
MARKER = "harness-env.json"
# Bump when the build or the repair changes meaning, so cached venvs are rebuilt.
_KEY_VERSION = 1

Log = Callable[[str], None]


def env_dir(cache: Path) -> Path:
    payload = json.dumps({"v": _KEY_VERSION, "python": PYTHON, "requirements": sorted(REQUIREMENTS)}, sort_keys=True)
    return cache / "envs" / f"tpu-mlir-{TOOL_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def package_dir(venv: Path) -> Path:
    return venv / "lib" / f"python{PYTHON}" / "site-packages" / "tpu_mlir"


def glibc_version_of(libc: Path) -> tuple[int, int] | None:
    """The release a bundled libc.so.6 announces ("... release version 2.35."), read from its bytes (running a foreign
    libc to ask it is exactly what fails)."""
    match = re.search(rb"release version (\d+)\.(\d+)", libc.read_bytes())
    return (int(match.group(1)), int(match.group(2))) if match else None


def system_glibc() -> tuple[int, int] | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError):
        return None
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def fix_bundled_glibc(package: Path, log: Log = print) -> dict[str, Any]:
    """Move the wheel's bundled glibc out of LD_LIBRARY_PATH's first folder when the system's is newer.

    Returns:
        A record for the env marker and every compile result: bundled and system versions, what was moved.
    """
    third_party = package / "lib" / "third_party"
    moved_dir = package / "lib" / MOVED_DIR
    libc = third_party / "libc.so.6"
    if not libc.exists():
        already = moved_dir / "libc.so.6"
        bundled = glibc_version_of(already) if already.exists() else None
        return {"bundled": _fmt(bundled), "system": _fmt(system_glibc()), "moved": [], "note": "nothing bundled"}
    bundled, system = glibc_version_of(libc), system_glibc()
    record: dict[str, Any] = {"bundled": _fmt(bundled), "system": _fmt(system), "moved": []}
    if bundled is None or system is None or system <= bundled:
        record["note"] = "kept: the system glibc is not newer than the bundled one"
        return record
    moved_dir.mkdir(exist_ok=True)
    for name in GLIBC_LIBS:
        if (third_party / name).exists():
            os.replace(third_party / name, moved_dir / name)
            record["moved"].append(name)
    record["note"] = (f"moved {', '.join(record['moved'])} from tpu_mlir/lib/third_party to lib/{MOVED_DIR}: the "
                      f"bundled glibc {_fmt(bundled)} is older than the system's {_fmt(system)}, and tools loading "
                      f"it die with 'GLIBC_{_fmt(system)} not found'")
    log(f"tpu-mlir env: {record['note']}")
    return record


def _fmt(version: tuple[int, int] | None) -> str | None:
    return f"{version[0]}.{version[1]}" if version else None


def ensure_env(cache: Path, *, log: Log = print) -> dict[str, Any]:
    """Build (once) and return the tpu-mlir env's marker: ``venv``, ``python``, ``bin``, ``fixes``, ``seconds``."""
    target = env_dir(cache)
    marker = target / MARKER
    if marker.is_file():
        try:
            return dict(json.loads(marker.read_text()), reused=True)
        except ValueError:
            pass
    owner = "tpu-mlir env"
    interpreter = find_python(PYTHON, f"{owner} (tpu_mlir {TOOL_VERSION} ships wheels for Python {PYTHON} only)")
    start = time.monotonic()
    python = build_venv(target, interpreter, list(REQUIREMENTS), owner,
                        "the pins are harness/compile/env.py REQUIREMENTS", log)
    fixes = {"glibc": fix_bundled_glibc(package_dir(target), log=log)}
    info = {"venv": str(target), "python": str(python), "bin": str(target / "bin"), "interpreter": interpreter,
            "requirements": list(REQUIREMENTS), "installer": "uv" if uv_binary() else "pip", "fixes": fixes,
            "seconds": round(time.monotonic() - start, 1), "harness_python": sys.version.split()[0]}
    write_json(marker, info)
    return dict(info, reused=False)


def tool_env(info: dict[str, Any]) -> dict[str, str]:
    """Environment for the tools: the venv's bin first on PATH, because model_transform runs helpers such as
    npz_tool.py through ``#!/usr/bin/env python3``, which must be the venv's Python, not the system's."""
    from harness.envs.proc import child_env

    env = child_env()
    env["PATH"] = info["bin"] + os.pathsep + env.get("PATH", "")
    env.pop("LD_LIBRARY_PATH", None)  # tpu_mlir/__init__ builds its own
    return env
