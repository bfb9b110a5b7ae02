"""The name the command line was called by, for usage lines and the fixes error messages suggest: the installed
script (`yolov5-export-matrix`), the installed package (`python -m yolov5_export_matrix`) or, from a checkout,
`python -m harness`."""

from __future__ import annotations

import sys
from pathlib import Path

DISTRIBUTION = "yolov5-export-matrix"  # the installed script's name too (pyproject.toml [project.scripts])
LAUNCHER = "yolov5_export_matrix"  # the installed package that holds the harness (install/yolov5_export_matrix)


def name(argv0: str | None = None) -> str:
    """How to call the command line again: the installed script's own name when ``argv0`` (default ``sys.argv[0]``)
    is that script, ``python -m yolov5_export_matrix`` when Python ran the launcher's __main__.py, else
    ``python -m harness`` (the checkout's __main__.py, or a program such as pytest imported the harness)."""
    called = Path(sys.argv[0] if argv0 is None else argv0)
    if called.name == DISTRIBUTION:
        return DISTRIBUTION
    return f"python -m {LAUNCHER if called.parent.name == LAUNCHER else __package__}"


def command(words: str) -> str:
    """A command line to suggest, e.g. ``command("mirror")`` -> ``yolov5-export-matrix mirror``."""
    return f"{name()} {words}"
