"""The merged results as one JSON document: what the report links for download (embedded in the page, so the page
stays one file) and writes beside it as ``results.json`` (a CI artifact). One schema-2 cell result per cell, as each
result file holds it, after merging shards and runs (``results.merge_results``)."""

from __future__ import annotations

import base64
import gzip
import json
import time
from pathlib import Path
from typing import Any

from harness import __version__
from harness.files import write_atomic
from harness.results.model import SCHEMA_VERSION, CellResult

KIND = "yolov5-export-matrix results"
FILE_NAME = "results.json"


def document(found: list[CellResult]) -> dict[str, Any]:
    """``found`` (one result per cell) as one JSON object: ``cells`` in cell-id order, each a result file's
    content; ``harness_version`` is the release that merged them (each cell names the one that made it)."""
    return {"kind": KIND, "schema": SCHEMA_VERSION, "harness_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cells": [r.to_json() for r in sorted(found, key=lambda r: r.cell)]}


def text(found: list[CellResult]) -> str:
    return json.dumps(document(found), indent=1)


def write(path: Path, document_text: str) -> Path:
    """``results.json`` (atomically) from ``text``."""
    write_atomic(path, document_text)
    return path


def embedded(document_text: str) -> str:
    """The document (``text``) gzipped and base64-encoded, for a ``data:`` link in the page: 420 cells are 5.4 MB
    of JSON and 0.36 MB in the page this way."""
    return base64.b64encode(gzip.compress(document_text.encode(), mtime=0)).decode("ascii")
