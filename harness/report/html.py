"""The HTML report: one self-contained file (inline CSS and JS, no CDN, no fetch) rendered with jinja2 autoescape.

Every string from a result (ref names, exception messages, log tails, diffs) reaches the page only through
autoescaped template expressions; nothing is marked safe and no result data is placed inside <script>. The merged
results JSON rides along as a base64 ``data:`` link (report/merged.py), which the page's script turns into a plain
``results.json`` download.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import jinja2

from harness.files import write_atomic
from harness.patch.profiles import PROFILES
from harness.report import charts, merged
from harness.report import view as view_mod
from harness.results.model import CellResult

TEMPLATES = Path(__file__).parent / "templates"


def is_current(page: Path, inputs: list[Path]) -> bool:
    """True when ``page`` is newer than everything it is rendered from: ``inputs`` (the results, the upgrade section,
    the config) and the report's own code. Rendering 420 cells takes ~0.8 s; a no-change `nox -s matrix` would pay it
    once per env for the same page."""
    if not page.is_file():
        return False
    sources = [*inputs, *Path(__file__).parent.rglob("*")]
    return page.stat().st_mtime > max((p.stat().st_mtime for p in sources if p.is_file()), default=0.0)


def _environment() -> jinja2.Environment:
    # Missing keys render empty (results are read tolerantly: older files, optional sections such as `compile`).
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["shape"] = lambda shape: "×".join(str(d) for d in shape or []) or "scalar"
    env.filters["num"] = lambda x: "–" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))
    env.filters["seconds"] = lambda x: "–" if x is None else f"{float(x):.1f} s"
    env.filters["duration"] = charts.seconds_text
    env.filters["fshort"] = view_mod.short_format
    env.filters["slug"] = lambda text: re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return env


def render(found: list[CellResult], *, title: str = "YOLOv5 export matrix",
           tolerances: dict[str, float] | None = None, upgrade: dict[str, Any] | None = None,
           merged_text: str | None = None) -> str:
    """The page for ``found`` results (one per cell, e.g. from results.merge_results); ``upgrade``: an upgrade answer
    (upgrade.json, harness/decide/upgrade/) shown as its own section above the grid; ``merged_text``:
    ``merged.text(found)``
    when the caller has it already (it is written beside the page too)."""
    view = view_mod.build(found, tolerances)
    return _environment().get_template("report.html.j2").render(
        view=view, title=title, labels=view_mod.OUTCOME_LABELS, compile_labels=view_mod.COMPILE_LABELS,
        outcomes=list(view_mod.OUTCOME_LABELS), profiles=PROFILES, upgrade=upgrade,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        download=merged.embedded(merged_text or merged.text(found)), download_name=merged.FILE_NAME)


def write(path: Path, found: list[CellResult], **kwargs: Any) -> Path:
    """Render and write the page atomically, like the results."""
    write_atomic(path, render(found, **kwargs))
    return path
