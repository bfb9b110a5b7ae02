"""The installed face of yolov5-export-matrix: the one top-level name the wheel adds to site-packages.

The harness's code is the ``harness`` package in ``_code/`` below this directory, kept out of site-packages' top
level on purpose: an unrelated PyPI distribution is called ``harness``, and env-side workers get PYTHONPATH =
``_code`` (it holds only ``harness/``), so an env's old Python imports the harness's worker and none of the host
venv's packages. Importing this package puts ``_code`` on sys.path; ``main`` is the console script.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CODE = Path(__file__).resolve().parent / "_code"
if _CODE.is_dir() and str(_CODE) not in sys.path:  # absent in an editable install, which runs from the checkout
    sys.path.insert(0, str(_CODE))


def main(argv: list[str] | None = None) -> int:
    """The `yolov5-export-matrix` command (harness.__main__.main)."""
    from harness.__main__ import main as harness_main

    return harness_main(argv)
