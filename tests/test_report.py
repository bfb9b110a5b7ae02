"""The HTML report and JUnit XML: built from real result files, checked in a real browser (Debian's chromium).

Most tests read tests/data/results (real results of a full matrix run). The hostile-strings tests run the harness on
a real git repository whose path, branch name and error message hold script tags, and check they reach the page as
text only.
"""

from __future__ import annotations

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

from harness import results
from harness.report import html, junit
from harness.report.view import build

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium keeps trying (refused) connections to Google services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def found() -> list[dict]:
    found = results.merge_results([DATA])
    assert len(found) == 12
    return found


@pytest.fixture(scope="module")
def page(found: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
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


def test_page_is_self_contained_and_complete(page: Path, found: list[dict]) -> None:
    text = page.read_text()
    tags = _Tags()
    tags.feed(text)
    assert tags.external == []  # no CDN, no fetch: every reference is an in-page anchor
    assert tags.scripts == 1
    view = build(found)
    assert tags.classes[("td", "gridcell")] == len(view.refs) * len(view.envs) == 5
    assert tags.classes[("a", "verdict")] == len(found)
    assert tags.classes[("details", "cellinfo")] == len(found)
    assert tags.classes[("div", "standin")] == 5  # every ref is a stand-in here, and says so
    assert "12 cells</b> (5 refs × 1 env)" in text
    for result in found:
        assert f'id="cell-{result["cell"]}"' in text
        assert f'href="#cell-{result["cell"]}"' in text


def test_envs_follow_the_torch_they_imported(found: list[dict]) -> None:
    # The same results as if from envs whose names sort the other way round ("py311-…" < "py38-…").
    renamed = [{**r, "env": name, "cell": r["cell"].replace("py311-torch2.14", name),
                "versions": {**r["versions"], "torch": torch}}
               for r, (name, torch) in zip(found[:3], [("py311-torch2.14", "2.14.1+cu130"),
                                                      ("py38-torch1.8", "1.8.0"), ("py311-torch2.4", "2.4.1+cu121")])]
    assert build(renamed).envs == ["py38-torch1.8", "py311-torch2.4", "py311-torch2.14"]


def test_native_signature_table_follows_the_refs(found: list[dict]) -> None:
    rows = build(found).signatures
    assert [(r.ref, r.format, len(r.outputs), r.changed) for r in rows] == [
        ("v5.0", "onnx", 3, False), ("v6.0", "onnx", 4, True), ("v6.1", "onnx", 4, False),
        ("v6.2", "onnx", 1, True), ("v7.0", "onnx", 1, True)]  # v7.0: same shape, output renamed to output0
    assert rows[-1].outputs == [("output0", [1, 25200, 85])]


def test_outcomes_and_drill_down(page: Path, found: list[dict]) -> None:
    view = build(found)
    assert view.counts == Counter({"workaround": 11, "error": 1})
    text = page.read_text()
    error = next(r for r in found if results.outcome(r) == "error")
    assert "onnxruntime cannot run the export at batch 1, size 320" in text  # the failing stage's message
    assert "min tolerance that passes" in text and "atol 0.001" in text
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 + dynamo=False" in error["verdict"]
    assert "+        pass  # yolov5-export-matrix: variant=1" in text  # the patch diff


def test_parity_shows_the_tolerances_a_result_was_judged_with(found: list[dict], tmp_path: Path) -> None:
    # Results record their [tolerances]; the page shows those, not whatever matrix.toml says today.
    judged = [{**r, "tolerances": {"atol": 0.25, "rtol": 0.5, "min_cosine": 0.75}} for r in found]
    text = html.write(tmp_path / "index.html", judged, tolerances={"atol": 1e-3, "rtol": 1e-3,
                                                                   "min_cosine": 0.9999}).read_text()
    assert "atol 0.25, rtol 0.5" in text and "atol 0.001" not in text


def test_junit_has_one_testcase_per_cell(found: list[dict], tmp_path: Path) -> None:
    path = junit.write(tmp_path / "junit.xml", found)
    root = ET.parse(path).getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(found) == int(root.get("tests"))
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == len(found)
    assert (int(root.get("errors")), int(root.get("failures")), int(root.get("skipped"))) == (1, 0, 0)
    [error] = [c for c in cases if c.find("error") is not None]
    assert (error.get("classname"), error.get("name")) == ("v5.0.py311-torch2.14", "variant 1 onnx-dynamic")
    assert error.find("error").get("type") == "ONNX dynamic: grid fixed at export size"


def test_compile_section_shows_only_when_present(found: list[dict], tmp_path: Path) -> None:
    assert "Compile: " not in html.render(found)
    with_compile = [dict(r) for r in found]
    with_compile[0]["compile"] = {"tool": "tpu-mlir", "tool_version": "1.0", "processor": "bm1684x",
                                  "quantize": "F16", "status": "fail", "stage": "transform", "cause": "output names",
                                  "message": "--output_names <b>x</b> not found", "log_tail": "", "timings": {},
                                  "similarity": [{"output": "output0", "cosine": 0.99, "euclidean": 0.1,
                                                  "max_abs": 0.01}]}
    with_compile[0]["compile"]["more"] = [{**with_compile[0]["compile"], "quantize": "F32", "status": "pass",
                                           "more": None}]
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
    sources = {r["source"] for r in found}
    if small_run.source.bundle and not standin:
        assert sources == {f"bundle:{Path(small_run.source.repo).resolve()}"}
    for source in sources:
        assert f"<dt>source</dt><dd>{escape(source)}</dd>" in text
    rows = [(r.ref, r.format, len(r.outputs), r.changed) for r in build(found).signatures]
    assert rows == [("v6.1", "torchscript", 4, False), ("v7.0", "torchscript", 1, True)]
    outs = [case.find("system-out").text for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")]
    assert len(outs) == len(found)
    for result in found:  # each testcase names its cell's source and commit (stand-ins differ per ref)
        assert any(f"source: {result['source']}\ncommit: {result['commit']}" in out for out in outs)


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


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    return page, problems


def _visible(page, selector: str) -> int:
    return page.locator(selector).evaluate_all("els => els.filter(e => e.offsetParent !== null).length")


def test_page_in_chromium(browser, page: Path, found: list[dict], tmp_path: Path) -> None:
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
    assert len(found) == 4 and {r["stage"] for r in found} == {"checkpoint"}
    assert all(HOSTILE in r["repo"] and HOSTILE in r["message"] for r in found)  # the real strings came through
    out = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(reports)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    text = (reports / "index.html").read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&#34;quotes&#34;" in text  # quotes escaped too (attribute safety)
    ET.parse(reports / "junit.xml")  # parses, so the message did not break the XML

    tab, problems = _open(browser, reports / "index.html")
    tab.click('a.verdict[data-cell="a__py311-torch2.14__1__onnx"]')
    assert f"branch a is not YOLOv5: {HOSTILE}" in tab.locator("#cells").inner_text()  # shown as text
    assert tab.locator("script").count() == 1  # only the page's own
    assert problems == []  # no alert() dialog, no errors
    tab.screenshot(path=str(tmp_path / "hostile.png"))
