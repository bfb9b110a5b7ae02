"""The HTML report and JUnit XML: built from real result files, checked in a real browser (Debian's chromium).

Most tests read tests/data/results (real results of a full matrix run); the layout test reads the full default matrix
made from them (tests/matrix_data.py: 7 envs x 5 refs x 4 variants x 3 formats). The hostile-strings tests run the
harness on a real git repository whose path, branch name and error message hold script tags, and check they reach the
page as text only.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import HOSTILE, SMALL_RUN_REFS, SmallRun
from markupsafe import escape
from matrix_data import ENVS, REFS, SPECIAL, full_matrix, out_of_the_box

from harness.report import charts, html, junit, view
from harness.report.view import build
from harness.results import model as results
from harness.results.model import CellResult, CompileSection, Output, Parity

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium keeps trying (refused) connections to Google services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def found() -> list[CellResult]:
    found = results.merge_results([DATA])
    assert len(found) == 12
    return found


@pytest.fixture(scope="module")
def page(found: list[CellResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return html.write(tmp_path_factory.mktemp("report") / "index.html", found,
                      tolerances={"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.9999})


class _Tags(HTMLParser):
    """Counts start tags by (tag, class) and collects external references: enough to check structure."""

    def __init__(self) -> None:
        super().__init__()
        self.classes: Counter[tuple[str, str]] = Counter()
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for cls in (values.get("class") or "").split():
            self.classes[(tag, cls)] += 1
        self.scripts += tag == "script"
        for key in ("src", "href"):
            target = values.get(key) or ""
            if target and not target.startswith("#"):
                self.external.append(target)


def test_page_is_self_contained_and_complete(page: Path, found: list[CellResult]) -> None:
    text = page.read_text()
    tags = _Tags()
    tags.feed(text)
    # No CDN, no fetch: every reference is an in-page anchor, but for the merged results carried in the page.
    assert [t for t in tags.external if not t.startswith("data:application/gzip;base64,")] == []
    assert len(tags.external) == 1
    assert tags.scripts == 1
    view = build(found)
    assert tags.classes[("td", "gridcell")] == len(view.refs) * len(view.envs) == 5
    assert tags.classes[("a", "verdict")] == len(found)
    assert tags.classes[("details", "cellinfo")] == len(found)
    assert tags.classes[("div", "standin")] == 5  # every ref is a stand-in here, and says so
    assert "12 cells</b> (5 refs × 1 env)" in text
    assert "default-src 'none'" in text  # the CSP: nothing loads from anywhere, charts included
    for result in found:
        assert f'id="cell-{result.cell}"' in text
        assert f'href="#cell-{result.cell}"' in text
    # The pictures: one parity mark per cell (every one reached a parity check), a bar of two stages (out-of-the-box
    # export, workaround reruns) for the one env, no signature diff (the only failing ONNX cell is on the first ref).
    assert tags.classes[("svg", "chart")] == 2
    assert tags.classes[("a", "pm")] == len(found) == 12
    assert tags.classes[("rect", "seg")] == 2
    assert tags.classes[("svg", "sigdiff")] == 0


def test_envs_follow_the_torch_they_imported(found: list[CellResult]) -> None:
    # The same results as if from envs whose names sort the other way round ("py311-…" < "py38-…").
    renamed = [dataclasses.replace(r, env=name, cell=r.cell.replace("py311-torch2.14", name),
                                   versions={**r.versions, "torch": torch})
               for r, (name, torch) in zip(found[:3], [("py311-torch2.14", "2.14.1+cu130"), ("py38-torch1.8", "1.8.0"),
                                                      ("py311-torch2.4", "2.4.1+cu121")], strict=True)]
    assert build(renamed).envs == ["py38-torch1.8", "py311-torch2.4", "py311-torch2.14"]


def test_native_signature_table_follows_the_refs(found: list[CellResult]) -> None:
    rows = build(found).signatures
    assert [(r.ref, r.format, len(r.outputs), r.changed) for r in rows] == [
        ("v5.0", "onnx", 3, False), ("v6.0", "onnx", 4, True), ("v6.1", "onnx", 4, False),
        ("v6.2", "onnx", 1, True), ("v7.0", "onnx", 1, True)]  # v7.0: same shape, output renamed to output0
    assert rows[-1].outputs == [("output0", [1, 25200, 85])]


def test_outcomes_and_drill_down(page: Path, found: list[CellResult]) -> None:
    view = build(found)
    assert view.counts == Counter({"workaround": 11, "error": 1})
    text = page.read_text()
    error = next(r for r in found if r.outcome() == "error")
    assert "onnxruntime cannot run the export at batch 1, size 320" in text  # the failing stage's message
    assert "min tolerance that passes" in text and "atol 0.001" in text
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False" in error.verdict
    assert "+        pass  # yolov5-export-matrix: variant=1" in text  # the patch diff


def test_parity_shows_the_tolerances_a_result_was_judged_with(found: list[CellResult], tmp_path: Path) -> None:
    # Results record their [tolerances]; the page shows those, not whatever matrix.toml says today.
    judged = [dataclasses.replace(r, tolerances={"atol": 0.25, "rtol": 0.5, "min_cosine": 0.75}) for r in found]
    text = html.write(tmp_path / "index.html", judged, tolerances={"atol": 1e-3, "rtol": 1e-3,
                                                                   "min_cosine": 0.9999}).read_text()
    assert "atol 0.25, rtol 0.5" in text and "atol 0.001" not in text


def test_stage_seconds_count_shared_work_once(found: list[CellResult]) -> None:
    onnx, ts = (next(r for r in found if r.cell == f"v6.2__py311-torch2.14__native__{f}")
                for f in ("onnx", "torchscript"))
    assert onnx.decided and onnx.first.export and ts.first.export
    shared = {"checkout": 2.0, "checkpoint": 10.0, "patch": 0.5}
    first = dataclasses.replace(onnx, timings=shared, decided=2, attempts=[
        dataclasses.replace(onnx.first, timings={"export": 20.0, "load": 1.0}),
        dataclasses.replace(onnx.deciding, name="A", timings={"export": 2.0}),  # every rerun counts
        dataclasses.replace(onnx.deciding, timings={"export": 3.0, "run": 1.0})])
    # The TorchScript cell waited for the same checkout, checkpoint and patch, and its export was the ONNX cell's.
    second = dataclasses.replace(out_of_the_box(
        ts, timings={"export": 20.0, "run": 3.0},
        export=dataclasses.replace(ts.first.export, shared_with="../v6.2__native__onnx")), timings=shared)
    assert view.stage_seconds(build([first, second])) == [("py311-torch2.14", {
        "checkout": 2.0, "checkpoint": 10.0, "patch": 0.5, "export": 20.0, "load": 1.0, "run": 3.0,
        charts.WORKAROUND: 6.0})]


def test_parity_points_take_the_worst_check_and_the_results_own_tolerances(found: list[CellResult]) -> None:
    base = next(r for r in found if r.cell == "v6.2__py311-torch2.14__native__onnx")
    checks = [Parity(backend="onnxruntime", min_tolerance=t, passed=True) for t in (1e-7, 5e-3, None)]
    own = dataclasses.replace(out_of_the_box(base, status="pass", parity=checks),
                              tolerances={"atol": 1e-2, "rtol": 1e-2, "min_cosine": 0.99})
    older = dataclasses.replace(out_of_the_box(base, status="pass", parity=checks),
                                cell="v7.0__py311-torch2.14__native__onnx", ref="v7.0", tolerances=None)
    none = dataclasses.replace(out_of_the_box(base, status="error", parity=[]),
                               cell="v6.0__py311-torch2.14__native__onnx", ref="v6.0")
    model = build([own, older, none], tolerances={"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.9999})
    points = {p.cell: p for p in view.parity_points(model)}
    assert set(points) == {own.cell, older.cell} and model.parity_missing == 1
    assert points[own.cell].value == 5e-3 and points[own.cell].limits == (1e-2, 1e-2)
    assert points[older.cell].limits == (1e-3, 1e-3)  # no recorded tolerances: matrix.toml's
    assert model.parity is not None
    assert {m.cell: m.verdict for m in model.parity.marks} == {own.cell: "within", older.cell: "over"}
    assert "min passing tolerance 5e-3; configured atol 1e-2, rtol 1e-2" in points[own.cell].label


def test_full_matrix_model(found: list[CellResult]) -> None:
    matrix = full_matrix(found)
    model = build(matrix, tolerances={"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.9999})
    assert (len(matrix), model.envs, model.refs) == (420, [e for e, _ in ENVS], REFS)
    assert model.counts == Counter({"works": 293, "workaround": 118, "broken": 3, "error": 3, "skipped": 3})
    assert model.parity is not None and model.timing is not None
    # 3 skipped cells and one that stopped at export have no parity number; 3 broken ones are outliers.
    assert (len(model.parity.marks), model.parity_missing) == (416, 4)
    assert model.parity.counts == {"within": 412, "over": 3, "between": 1}
    # Torch < 2.6: checkout, checkpoint, patch, export, load, run, compare; from 2.8 on the cells stop at export and
    # the rest happens in the workaround reruns.
    assert [len(b.segments) for b in model.timing.bars] == [7, 7, 7, 7, 7, 5, 5]
    assert sorted(model.signature_diffs) == sorted(c for c, o in (("__".join(k), v) for k, v in SPECIAL.items())
                                                   if o in ("broken", "error") and "onnx" in c)
    renamed = model.signature_diffs["v7.0__py311-torch2.1__native__onnx"]
    assert renamed.before_title.startswith("v6.2") and [r.note for r in renamed.rows] == ["name changed"]
    assert [r.note for r in model.signature_diffs["v7.0__py38-torch1.8__native__onnx"].rows] == ["not produced"]


def test_signature_diff_skips_earlier_refs_without_outputs(found: list[CellResult]) -> None:
    matrix = full_matrix(found)
    # v6.2's same cell stopped before writing outputs too: the diff is against v6.1, the nearest ref that wrote some.
    blank = "v6.2__py38-torch1.8__native__onnx"
    matrix = [out_of_the_box(r, status="error", outputs=[], parity=[]) if r.cell == blank else r for r in matrix]
    model = build(matrix)
    diffs = model.signature_diffs
    assert diffs["v7.0__py38-torch1.8__native__onnx"].before_title == "v6.1 (earlier ref)"
    assert blank in diffs and diffs[blank].before_title == "v6.1 (earlier ref)"  # a failing ONNX cell itself
    # Not for TorchScript, nor for cells that work.
    assert not any("torchscript" in c for c in diffs)
    assert {model.at(*c.split("__")).outcome for c in diffs} == {"broken", "error"}  # type: ignore[union-attr]


def test_chart_strings_are_escaped(found: list[CellResult], tmp_path: Path) -> None:
    # Output names come from the exported file: a hostile one reaches the signature diff's SVG as text only.
    matrix = full_matrix(found)
    cell = "v7.0__py311-torch2.1__native__onnx"
    matrix = [out_of_the_box(r, outputs=[Output(HOSTILE, [1, 25200, 85], "float32")], cause=HOSTILE)
              if r.cell == cell else r for r in matrix]
    text = html.render(matrix)
    assert text.count("<script>") == 1 and "<script>alert" not in text
    assert f'<tspan class="sdchanged">{HOSTILE}' not in text
    assert '<tspan class="sdchanged">&lt;script&gt;alert(1)&lt;/script&gt;' in text


def test_no_pictures_without_numbers(found: list[CellResult]) -> None:
    # Cells skipped before anything ran: no parity, no timings. The page says so with no empty chart.
    skipped = [dataclasses.replace(out_of_the_box(r, status="skip", parity=[], timings={}), timings={}) for r in found]
    model = build(skipped)
    assert (model.parity, model.timing, model.parity_missing) == (None, None, len(found))
    text = html.render(skipped)
    assert 'id="pictures"' not in text and "<svg" not in text


def test_junit_has_one_testcase_per_cell(found: list[CellResult], tmp_path: Path) -> None:
    path = junit.write(tmp_path / "junit.xml", found)
    root = ET.parse(path).getroot()  # noqa: S314 (the harness's own output)
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(found) == int(root.get("tests"))
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == len(found)
    assert (int(root.get("errors")), int(root.get("failures")), int(root.get("skipped"))) == (1, 0, 0)
    [error] = [c for c in cases if c.find("error") is not None]
    assert (error.get("classname"), error.get("name")) == ("v5.0.py311-torch2.14", "variant 1 onnx-dynamic")
    assert error.find("error").get("type") == "ONNX dynamic: grid fixed at export size"


def test_compile_section_shows_only_when_present(found: list[CellResult], tmp_path: Path) -> None:
    assert "Compile: " not in html.render(found)
    with_compile = [dataclasses.replace(r) for r in found]
    f16 = CompileSection(tool="tpu-mlir", tool_version="1.0", processor="bm1684x", quantize="F16", status="fail",
                         stage="transform", cause="output names", message="--output_names <b>x</b> not found",
                         similarity=[{"output": "output0", "cosine": 0.99, "euclidean": 0.1, "max_abs": 0.01}])
    f16.more = [dataclasses.replace(f16, quantize="F32", status="pass")]
    with_compile[0].compile = f16
    text = html.render(with_compile)
    assert "Compile: tpu-mlir 1.0, bm1684x F16" in text and "--output_names &lt;b&gt;x&lt;/b&gt; not found" in text
    assert "Compile: tpu-mlir 1.0, bm1684x F32" in text
    assert 'class="compile c-fail"' in text


# -- a page from a real run on the tests' repository -------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.slow
def test_page_of_a_real_run_says_where_its_code_came_from(small_run: SmallRun, tmp_path: Path) -> None:
    """The shared small run (v6.1, v7.0 on `yolov5_source`) through `python -m harness report`: the grid marks refs as
    stand-ins exactly when their code was one, each drill-down names the source (``bundle:<path>`` for a bundle), and
    the native signature table shows v6.2's change as seen from v6.1 to v7.0 (4 TorchScript outputs, then 1)."""
    out = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(small_run.reports),
                          "--out", str(tmp_path / "index.html"), "--junit", str(tmp_path / "junit.xml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    found = results.load_results(small_run.reports)
    text = (tmp_path / "index.html").read_text()
    tags = _Tags()
    tags.feed(text)
    standin = small_run.source.kind == "stand-in"
    assert tags.classes[("div", "standin")] == (len(SMALL_RUN_REFS) if standin else 0)
    assert ('id="standin-banner"' in text) == standin
    for ref in SMALL_RUN_REFS:
        assert f'<div class="commit">{small_run.source.tags[ref][:10]}</div>' in text
    sources = {r.source for r in found}
    if small_run.source.bundle and not standin:
        assert sources == {f"bundle:{Path(small_run.source.repo).resolve()}"}
    for source in sources:
        assert f"<dt>source</dt><dd>{escape(source)}</dd>" in text
    rows = [(r.ref, r.format, len(r.outputs), r.changed) for r in build(found).signatures]
    assert rows == [("v6.1", "torchscript", 4, False), ("v7.0", "torchscript", 1, True)]
    junit = ET.parse(tmp_path / "junit.xml")  # noqa: S314 -- pytest's own file
    outs = [case.find("system-out").text for case in junit.getroot().iter("testcase")]
    assert len(outs) == len(found)
    for result in found:  # each testcase names its cell's source and commit (stand-ins differ per ref)
        assert any(f"source: {result.source}\ncommit: {result.commit}" in out for out in outs)


# -- the page in a real browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, path: Path, width: int = 1400, height: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    return page, problems


def _visible(page, selector: str) -> int:
    # A filtered-out grid square keeps its place (visibility: hidden); a filtered-out drill-down is not displayed.
    return page.locator(selector).evaluate_all(
        "els => els.filter(e => e.offsetParent !== null && getComputedStyle(e).visibility !== 'hidden').length")


def test_page_in_chromium(browser, page: Path, found: list[CellResult], tmp_path: Path) -> None:
    tab, problems = _open(browser, page)
    view = build(found)
    assert tab.locator("td.gridcell").count() == len(view.refs) * len(view.envs)
    assert _visible(tab, "a.verdict") == len(found)
    assert tab.inner_text("#shown") == f"{len(found)} of {len(found)} cells shown"

    tab.uncheck('input[name="outcome"][value="workaround"]')  # status filter
    assert _visible(tab, "a.verdict") == view.counts["error"] == 1
    assert _visible(tab, "details.cellinfo") == 1
    assert tab.inner_text("#shown") == f"1 of {len(found)} cells shown"
    assert tab.locator("td.gridcell.filtered-out").count() == 4  # only v5.0 still shows a verdict
    tab.check('input[name="outcome"][value="workaround"]')
    tab.uncheck('input[name="format"][value="torchscript"]')  # format filter
    assert _visible(tab, "a.verdict") == len(found) - 5
    tab.uncheck('input[name="variant"][value="native"]')  # variant filter
    assert _visible(tab, "a.verdict") == 2
    tab.check('input[name="variant"][value="native"]')
    tab.check('input[name="format"][value="torchscript"]')
    assert _visible(tab, "a.verdict") == len(found)

    cell = "v6.2__py311-torch2.14__native__onnx"
    assert not tab.locator(f'details[id="cell-{cell}"]').evaluate("d => d.open")
    tab.click(f'a.verdict[data-cell="{cell}"]')  # drill-down opens
    assert tab.locator(f'details[id="cell-{cell}"]').evaluate("d => d.open")
    assert "1×25200×85" in tab.locator(f'details[id="cell-{cell}"] table.outputs').inner_text()

    shot = tmp_path / "report.png"
    tab.evaluate("window.scrollTo(0, 0)")
    tab.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert problems == []


def _box(tab, selector: str) -> dict:
    return tab.locator(selector).evaluate("e => e.getBoundingClientRect().toJSON()")


def test_full_default_matrix_fits_a_laptop_screen(browser, found: list[CellResult], tmp_path: Path) -> None:
    """7 envs x 5 refs x 12 cells at 1,440 x 900: every env column and ref row of the grid on screen at once, no
    horizontal scrolling; squares answer hover and click; the charts are drawn with one mark per datum."""
    matrix = full_matrix(found)
    path = html.write(tmp_path / "index.html", matrix, tolerances={"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.9999})
    width, height = 1440, 900
    tab, problems = _open(browser, path, width, height)

    assert tab.evaluate("document.documentElement.scrollWidth") <= width  # no horizontal scrollbar
    envs = tab.locator("#grid th.env")
    assert envs.all_inner_texts() == [e for e, _ in ENVS]  # in torch order, each labelled once
    for i in range(envs.count()):
        box = envs.nth(i).evaluate("e => e.getBoundingClientRect().toJSON()")
        assert box["left"] >= 0 and box["right"] <= width, box
    rows = tab.locator("#grid tbody tr")
    assert [t.split()[0] for t in tab.locator("#grid th.ref").all_inner_texts()] == REFS
    for i in range(rows.count()):
        box = rows.nth(i).evaluate("e => e.getBoundingClientRect().toJSON()")
        assert box["top"] >= 0 and box["bottom"] <= height and box["right"] <= width, (REFS[i], box)
    squares = tab.locator("a.verdict")
    assert squares.count() == 420
    inside = squares.evaluate_all(f"""els => els.filter(e => {{ const r = e.getBoundingClientRect();
        return r.left >= 0 && r.top >= 0 && r.right <= {width} && r.bottom <= {height} && r.width >= 20; }}).length""")
    assert inside == 420  # every square on the first screen, none smaller than 20 px
    assert tab.locator("#grid .vbox span").count() == 4 * len(REFS)  # variant labels once per ref row
    assert tab.locator("#grid th.fmts abbr").count() == 3 * len(ENVS)  # format labels once per env column
    assert _box(tab, "#side")["right"] <= width  # legend and filters beside the grid

    # Hover: the square's title and the readout line carry the verdict. Click: its drill-down opens.
    cell = "v7.0__py311-torch2.1__native__onnx"
    square = tab.locator(f'a.verdict[data-cell="{cell}"]')
    assert square.inner_text() == "✘" and "o-broken" in square.get_attribute("class")
    assert square.get_attribute("title") == "v7.0 · py311-torch2.1 · variant native · onnx: broken: parity"
    square.hover()
    assert tab.inner_text("#readout") == square.get_attribute("title")
    tab.mouse.move(1, 1)  # off the grid: the readout goes back to its hint
    assert "Hover" in tab.inner_text("#readout")
    shot = tmp_path / "matrix-1440x900.png"
    square.hover()
    tab.screenshot(path=str(shot))  # what a person sees first: the whole grid, one square hovered
    square.click()
    details = tab.locator(f'details[id="cell-{cell}"]')
    assert details.evaluate("d => d.open") and tab.evaluate("location.hash") == f"#cell-{cell}"
    assert tab.locator("details.cellinfo[open]").count() == 1
    diff = details.locator("svg.sigdiff")
    assert diff.count() == 1 and diff.locator("g.sdrow").count() == 1
    assert diff.locator("g.sdrow.differs").get_attribute("data-note") == "name changed"
    assert "output0" in diff.text_content() and "output" in diff.locator("text").nth(2).text_content()  # v6.2's name
    assert diff.locator("title").first.text_content().startswith("Outputs of v7.0 (this cell) beside v6.2")
    tab.screenshot(path=str(tmp_path / "drilldown.png"))

    # The charts: one mark per cell with a parity number, one segment per env and stage, each with a <title>.
    marks = tab.locator("#parity-chart a.pm")
    assert marks.count() == 416
    assert tab.locator('#parity-chart a.pm[data-verdict="over"]').count() == 3
    assert marks.evaluate_all("els => els.every(a => a.querySelector('title').textContent.includes('min passing'))")
    limit_x = tab.locator("#parity-chart line.limit").first.evaluate("l => l.getBoundingClientRect().left")
    over_x = tab.locator('#parity-chart a.pm[data-verdict="over"]').evaluate_all(
        "els => els.map(a => a.getBoundingClientRect().left)")
    assert min(over_x) > limit_x  # outliers drawn right of the configured tolerance
    segments = tab.locator("#timing-chart rect.seg")
    assert segments.count() == 7 * 5 + 2 * 5  # 5 envs x 7 stages, 2 envs x 5 (see test_full_matrix_model)
    assert "py311-torch2.14 · workaround reruns:" in segments.last.locator("title").text_content()
    tab.locator("#pictures").scroll_into_view_if_needed()
    tab.screenshot(path=str(tmp_path / "pictures.png"))

    # Filters still hide by outcome; hidden squares keep their place so the grid does not reflow.
    tab.evaluate("window.scrollTo(0, 0)")
    before = _box(tab, f'a.verdict[data-cell="{cell}"]')
    tab.uncheck('input[name="outcome"][value="works"]')
    tab.uncheck('input[name="outcome"][value="workaround"]')
    assert _visible(tab, "a.verdict") == 9 and tab.inner_text("#shown") == "9 of 420 cells shown"
    assert _box(tab, f'a.verdict[data-cell="{cell}"]') == before
    tab.uncheck('input[name="format"][value="onnx"]')
    assert _visible(tab, "a.verdict") == 6  # 2 broken, 2 error and 2 skipped cells are not plain onnx
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshots: {shot} {tmp_path / 'drilldown.png'} {tmp_path / 'pictures.png'}")
    assert problems == []


# -- hostile strings from a real run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_run(failing_repo: Path, make_config, quick_env: str, env_python: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    reports = tmp_path_factory.mktemp("hostile-reports")
    config = make_config(["a", "b"])
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config),
                           "--repo", str(failing_repo), "--refs", "a", "--variants", "native,1",
                           "--formats", "onnx,torchscript", "--reports", str(reports)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    return reports, proc


def test_a_script_tag_ref_is_refused_before_it_reaches_anything(failing_repo: Path, make_config,
                                                                 quick_env: str) -> None:
    import git

    assert HOSTILE in [h.name for h in git.Repo(failing_repo).heads]  # git took it
    config = make_config([HOSTILE])
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--env", quick_env, "--config", str(config),
                           "--repo", str(failing_repo), "--reports", str(failing_repo.parent / "never")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "invalid ref '<script>alert(1)</script>'" in proc.stderr
    assert not (failing_repo.parent / "never").exists()


@pytest.mark.torch
def test_script_tags_from_a_real_run_reach_the_page_as_text(hostile_run, browser, tmp_path: Path) -> None:
    reports, proc = hostile_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = results.merge_results([reports])
    assert len(found) == 4 and {r.first.stage for r in found} == {"checkpoint"}
    assert {r.outcome() for r in found} == {"error"} and all(r.verdict.startswith("error: ") for r in found)
    assert all(HOSTILE in (r.repo or "") and HOSTILE in r.first.message for r in found)  # the real strings came through
    out = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(reports)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    text = (reports / "index.html").read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&#34;quotes&#34;" in text  # quotes escaped too (attribute safety)
    ET.parse(reports / "junit.xml")  # noqa: S314 (parses, so the message did not break the XML)

    tab, problems = _open(browser, reports / "index.html")
    tab.click('a.verdict[data-cell="a__py311-torch2.14__1__onnx"]')
    assert f"branch a is not YOLOv5: {HOSTILE}" in tab.locator("#cells").inner_text()  # shown as text
    assert tab.locator("script").count() == 1  # only the page's own
    assert problems == []  # no alert() dialog, no errors
    tab.screenshot(path=str(tmp_path / "hostile.png"))


def test_the_guide_lines_table_says_which_refs_need_the_adapted_form(tmp_path: Path) -> None:
    # Real results of the guide's lines on torch 2.14 (upstream v7.0, yolov5n at 160): variant 3 needed the adapted
    # tuple(x), variant 1 worked as written (with the env's own workarounds, which are not about the guide's line).
    found = results.load_results(DATA.parent / "data-guide")
    rows = {(r.ref, r.variant): r for r in build(found).guide_lines}
    assert rows[("v7.0", "3")].reading == "adapted" and rows[("v7.0", "3")].workarounds == ["patch form tuple(x)"]
    assert rows[("v7.0", "1")].reading == "as written"
    text = html.render(found)
    assert "<h2>The guides' lines as written</h2>" in text and "◑ needs patch form tuple(x)" in text
    # One table per vendor profile whose variants ran: Sophgo's (1, 3, 4), not Rockchip's (npu: no such cell here).
    assert 'data-profile="sophgo"' in text and 'data-profile="rockchip"' not in text
    assert all(row.profile == "sophgo" for row in rows.values())


# -- search, ref/env filters and the merged results download ----------------------------------------------------


def _causes(result: CellResult) -> set[str]:
    return {a.cause for a in result.attempts if a.cause}


def test_search_filters_and_download_in_chromium(browser, found: list[CellResult], tmp_path: Path) -> None:
    """On the full default matrix: the search box matches ref, env, cause and workaround (every word), the ref and
    env boxes filter like the others, drill-downs follow their squares, and the download link gives the merged
    results as plain JSON that reads back into the same typed results. All under the page's CSP, no request."""
    import json

    from harness.report import merged

    matrix = full_matrix(found)
    path = html.write(tmp_path / "index.html", matrix)
    assert 'content="default-src \'none\'; style-src \'unsafe-inline\'; script-src \'unsafe-inline\'"' in \
        path.read_text()
    tab, problems = _open(browser, path, 1440, 900)
    total = len(matrix)

    def shown() -> int:
        squares = _visible(tab, "a.verdict")
        assert _visible(tab, "details.cellinfo") == squares  # each drill-down follows its square
        assert tab.inner_text("#shown") == f"{squares} of {total} cells shown"
        return squares

    def search(text: str) -> int:
        tab.fill("#search", text)
        return shown()

    assert shown() == total
    # By ref, by env, by cause, by workaround, and every word at once; case does not matter.
    assert search("v6.1") == sum(r.ref == "v6.1" for r in matrix) == 84
    assert search("PY39-TORCH1.10") == sum(r.env == "py39-torch1.10" for r in matrix) == 60
    grid_fixed = [r for r in matrix if any("grid fixed" in c for c in _causes(r))]
    assert grid_fixed and search("grid fixed") == len(grid_fixed)
    mobile = [r for r in matrix if any("optimize_for_mobile" in a.name for a in r.reruns)]
    assert mobile and search("optimize_for_mobile") == len(mobile)
    both = [r for r in mobile if r.ref == "v5.0" and r.env == "py311-torch2.14"]
    assert both and search("optimize_for_mobile v5.0 py311-torch2.14") == len(both)
    assert search("no such thing") == 0
    assert tab.locator("td.gridcell.filtered-out").count() == len(REFS) * len(ENVS)
    assert search("") == total

    # Ref and env boxes.
    tab.uncheck('input[name="ref"][value="v5.0"]')
    assert shown() == total - 84
    tab.uncheck('input[name="env"][value="py38-torch1.8"]')
    assert shown() == sum(r.ref != "v5.0" and r.env != "py38-torch1.8" for r in matrix)
    tab.fill("#search", "v5.0")  # the search and the boxes combine
    assert shown() == 0
    tab.fill("#search", "")
    tab.check('input[name="ref"][value="v5.0"]')
    tab.check('input[name="env"][value="py38-torch1.8"]')
    assert shown() == total

    # The download: plain JSON named results.json, every cell as its result file holds it.
    with tab.expect_download() as info:
        tab.click("#results-json")
    download = info.value
    assert download.suggested_filename == merged.FILE_NAME
    saved = tmp_path / "downloaded.json"
    download.save_as(saved)
    data = json.loads(saved.read_text())
    assert data["kind"] == merged.KIND and data["schema"] == results.SCHEMA_VERSION
    assert [c["cell"] for c in data["cells"]] == sorted(r.cell for r in matrix)
    assert [CellResult.from_json(c) for c in data["cells"]] == sorted(matrix, key=lambda r: r.cell)
    assert [p for p in problems if not p.startswith("request: blob:")] == []


def test_report_writes_the_merged_results_beside_the_page(tmp_path: Path) -> None:
    """`report` writes results.json (the CI artifact) next to index.html; it reads back into the merged results."""
    import json

    out = tmp_path / "site"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(DATA), "--out",
                           str(out / "index.html"), "--junit", str(tmp_path / "junit.xml")],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"{out / 'index.html'}, {tmp_path / 'junit.xml'}, {out / 'results.json'}")
    data = json.loads((out / "results.json").read_text())
    assert [CellResult.from_json(c) for c in data["cells"]] == results.merge_results([DATA])
    assert data["harness_version"] == __import__("harness").__version__
