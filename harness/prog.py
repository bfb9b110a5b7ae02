"""The name the command line was called by, for usage lines and the fixes error messages suggest: the installed
script (`yolov5-export-matrix`) or, from a checkout, `python -m <package>`."""

from __future__ import annotations

import sys
from pathlib import Path

DISTRIBUTION = "yolov5-export-matrix"  # the installed script's name too (pyproject.toml [project.scripts])


def name(argv0: str | None = None) -> str:
    """How to call the command line again: the installed script's own name when ``argv0`` (default ``sys.argv[0]``)
    is that script, else ``python -m harness`` (Python ran the package's __main__.py, or a program such as pytest
    imported the harness)."""
    called = Path(sys.argv[0] if argv0 is None else argv0).name
    return DISTRIBUTION if called == DISTRIBUTION else f"python -m {__package__}"


def command(words: str) -> str:
    """A command line to suggest, e.g. ``command("mirror")`` -> ``yolov5-export-matrix mirror``."""
    return f"{name()} {words}"
