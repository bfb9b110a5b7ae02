"""Where the harness keeps what it downloads and builds, so every module agrees on one place."""

from __future__ import annotations

import os
from pathlib import Path

# Overrides the cache location; CI points it at a cached directory, tests at the user's cache so reruns are fast.
CACHE_ENV = "YOLOV5_MATRIX_CACHE"


def cache_dir() -> Path:
    """Return the harness's cache directory (not created here).

    Why one function: clones, the PyPI stand-in mirror, wheels and env venvs all live under it, and a single
    override ($YOLOV5_MATRIX_CACHE) must move all of them together.

    Returns:
        $YOLOV5_MATRIX_CACHE if set and non-empty, else ~/.cache/yolov5-export-matrix.
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "yolov5-export-matrix"
