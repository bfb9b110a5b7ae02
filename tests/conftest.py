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
