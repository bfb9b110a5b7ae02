"""Shared fixtures. The stand-in mirror is built once per session into the user cache, so reruns are fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.mirror import build_mirror, default_mirror_dir, default_wheel_cache


@pytest.fixture(scope="session")
def mirror_repo() -> Path:
    """The offline stand-in repository (`python -m harness mirror`), built from scratch if absent or stale.

    Lives in harness.paths.cache_dir() (override with $YOLOV5_MATRIX_CACHE): the first run downloads five wheels
    from PyPI (~10 s), later runs find the mirror current and return at once.
    """
    return build_mirror(default_mirror_dir(), wheel_cache=default_wheel_cache())


# The env the end-to-end tests run real exports in: the one that installs quickly here (torch 2.14.1 on py3.11).
QUICK_ENV = "py311-torch2.14"


@pytest.fixture(scope="session")
def quick_env() -> str:
    return QUICK_ENV


@pytest.fixture(scope="session")
def config():
    """The project's real matrix.toml."""
    from harness.config import load_config

    return load_config(Path(__file__).resolve().parent.parent / "matrix.toml")


@pytest.fixture(scope="session")
def env_python(config) -> Path:
    """The quick env's interpreter (torch, onnx, onnxruntime), built into the cache on first use (~1-2 min with
    uv's wheel cache warm, a few GB of downloads cold) and reused afterwards."""
    from harness.envs import ensure_env
    from harness.paths import cache_dir

    return ensure_env(config.envs[QUICK_ENV], cache_dir())
