"""harness.upgrade: grouping real results (tests/data-upgrade: upstream YOLOv5 v6.1, v6.2 and v7.0, yolov5n at 160, in
torch 2.4 and 2.14), the edits a deployer makes, the reports, bad input through the command line, and one real upgrade
through the command line on a small YOLOv5 history (exit code, bisect, a rerun that computes nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import git
import pytest
from test_bisect import BROKEN, DETECT, history, history_weights, yolov5_tags  # noqa: F401 (fixtures shared)

from harness import results
from harness.report import html
from harness.results import CellResult
from harness.upgrade import compare, render
from harness.upgrade.question import Answer, Question, answer_of

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data-upgrade"
ENV, NEW_ENV = "py311-torch2.4", "py311-torch2.14"
VARIANTS = ["native", "1", "3", "4"]
FORMATS = ["onnx", "onnx-dynamic", "torchscript"]


@pytest.fixture(scope="module")
def done() -> dict[str, CellResult]:
    found = {r.cell: r for r in results.merge_results([DATA])}
    assert len(found) == 48  # v6.1, v6.2, v7.0 in torch 2.4 and v7.0 in torch 2.14, 12 cells each
    return found


def offline(done: dict[str, CellResult], q: Question, envs: list[str] = [ENV]) -> Answer:  # noqa: B006
    """The answer the command gives for these results, without running or bisecting anything."""
    return answer_of(q, envs, VARIANTS, FORMATS, done)


def groups(answer: Answer) -> list[tuple[str, bool, str, str]]:
    return [(g.group.kind, g.group.failing, g.group.title, g.scope) for g in answer.groups]


def edits(answer: Answer, kind: str) -> list[str]:
    [found] = [g for g in answer.groups if g.group.kind == kind]
    return [e.text() for e in found.edits]


# -- grouping real results -------------------------------------------------------------------------------------------


def test_v6_2_to_v7_0_is_one_rename_in_every_variant(done: dict[str, CellResult]) -> None:
    """Upstream renamed the ONNX output `output` -> `output0` (#9465): one failing group of the 8 ONNX cells (every
    variant, static and dynamic), not 8 lines; the torch-made names behind it (`onnx::Sigmoid_411` -> `_412`) are a
    note of their own, said plainly; TorchScript has no names and does not change."""
    answer = offline(done, Question("v6.2", "v7.0"))
    assert groups(answer) == [
        ("name", True, "ONNX output #0 renamed `output` → `output0`",
         "8 cells: env py311-torch2.4 · every variant · formats onnx/onnx-dynamic"),
        ("auto-name", False, ("auto-generated ONNX output names changed: such names change with any graph edit; do "
                             "not write configs on them"), ("2 cells: env py311-torch2.4 · variant 4 · formats "
                                                          "onnx/onnx-dynamic")),
    ]
    assert answer.exit_code == 1
    rename = answer.groups[0]
    representative = compare.representative(rename.group, [ENV])
    assert representative.pair.slot == compare.Slot(ENV, "native", "onnx")  # the native cell is the one probed
    assert compare.probe_ends(rename.group, representative) == ("output", "output0")


def test_tpu_mlir_output_names_before_and_after(done: dict[str, CellResult]) -> None:
    """The --output_names value per variant and format, as the ONNX files have them; made-up names flagged."""
    texts = edits(offline(done, Question("v6.2", "v7.0")), "name")
    assert texts[0] == ("tpu-mlir model_transform (variants native/1 · formats onnx/onnx-dynamic): "
                        "`--output_names output` → `--output_names output0`")
    assert texts[1] == ("tpu-mlir model_transform (variant 3 · format onnx): `--output_names output,354,366` → "
                        "`--output_names output0,354,366` — auto-generated: `354`, `366` — such names change with any "
                        "graph edit; do not write configs on them")
    assert len(texts) == 5  # variants 3 and 4 each have their own lists in onnx and onnx-dynamic


def test_native_count_change_names_the_patch_variant_that_keeps_the_old_outputs(done: dict[str, CellResult]) -> None:
    """v6.1 -> v6.2: the native export drops from 4 outputs to 1 (#7259); variant 4 (the guide's line) exports the old
    four on v6.2, which the advice reads off v6.2's own variant-4 result."""
    answer = offline(done, Question("v6.1", "v6.2"))
    count = next(g for g in answer.groups if g.group.kind == "count")
    assert count.group.failing and count.group.title == "output count 4 → 1"
    assert count.scope == "3 cells: env py311-torch2.4 · variant native · every format"
    texts = [e.text() for e in count.edits]
    keep = [t for t in texts if t.startswith("to keep the old 4 outputs")]
    assert keep == [("to keep the old 4 outputs, patch Detect.forward's return in models/yolo.py (variant 4): "
                    "`return x if self.training else (torch.cat(z, 1), x)` — variant 4 exports 1x1575x85, "
                    "1x3x20x20x85, 1x3x10x10x85, 1x3x5x5x85 on v6.2 (works)")]
    assert any(t.startswith("tpu-mlir model_transform (format onnx): `--output_names output,onnx::Sigmoid_") and
               t.endswith("such names change with any graph edit; do not write configs on them") for t in texts)


def test_a_torch_upgrade_that_needs_workarounds_fails_unless_accepted(done: dict[str, CellResult]) -> None:
    """v7.0 from torch 2.4 to 2.14: every cell now needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (and ONNX dynamo=False).
    A deploy script that worked breaks until it is edited: failing groups, each with the edit to paste;
    --accept-workarounds turns them into notes."""
    q = Question("v7.0", "v7.0", ENV, NEW_ENV)
    answer = offline(done, q)
    assert answer.exit_code == 1 and {g.group.kind for g in answer.groups} == {"workaround"}
    first = answer.groups[0]
    assert first.group.title == "newly needs a workaround: works with workaround TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"
    assert first.scope == ("3 cells: env py311-torch2.4 → py311-torch2.14 · variants native/1/4 · format "
                           "torchscript")
    assert [e.text() for e in first.edits] == [
        ("add to the export's environment: `export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` — restores torch.load's "
        "pre-2.6 default; safe only for a checkpoint you trust (the harness's own is); out of the box: torch.load "
        "weights_only")]
    onnx = next(g for g in answer.groups if g.group.after.endswith("+ dynamo=False"))
    assert any(e.what == "edit the export script (dynamo=False)" for e in onnx.edits)
    accepted = offline(done, Question("v7.0", "v7.0", ENV, NEW_ENV, accept_workarounds=True))
    assert accepted.exit_code == 0
    assert all(not g.group.failing and g.group.waived == "--accept-workarounds" for g in accepted.groups)


def test_no_change_is_nothing_to_edit(done: dict[str, CellResult]) -> None:
    answer = offline(done, Question("v7.0", "v7.0", ENV, ENV, variants=("native",)), envs=[ENV])
    model = answer.to_json()
    assert answer.exit_code == 0 and model["groups"] == []
    assert render.console(model).splitlines()[0].endswith("no change in 12 cell pair(s) — nothing to edit")


def test_auto_names() -> None:
    made_up = ["403", "1182", "onnx::Sigmoid_345", "/model.24/Sigmoid_output_0", "clone", "clone_2"]
    given = ["output", "output0", "output0_1", "images", "boxes"]
    assert all(compare.is_auto_name(n) for n in made_up)
    assert not any(compare.is_auto_name(n) for n in given)


# -- the reports -----------------------------------------------------------------------------------------------------


def test_console_prints_groups_not_cells(done: dict[str, CellResult]) -> None:
    model = offline(done, Question("v6.2", "v7.0")).to_json()
    text = render.console(model)
    assert [line.split("  ")[0] for line in text.splitlines() if line[:4] in ("FAIL", "note")] == ["FAIL", "note"]
    assert "__" not in text  # no cell ids: one line per group, its cells summarised
    assert text.splitlines()[0] == "Upgrade v6.2 → v7.0: 1 failing group(s), 1 note(s) over 12 cell pair(s)"


def test_markdown_json_and_html_section(done: dict[str, CellResult], tmp_path: Path) -> None:
    """upgrade.md and upgrade.json are written together; the report shows the section from upgrade.json (also when
    `report` re-renders the folder), with a link from each cell of a group to its drill-down."""
    model = offline(done, Question("v6.2", "v7.0")).to_json()
    render.write(model, tmp_path)
    md = (tmp_path / "upgrade.md").read_text()
    assert md.startswith("## Upgrade v6.2 → v7.0\n\n**1 failing group(s)**, 1 note(s)")
    assert "### ✘ FAIL: ONNX output #0 renamed `output` → `output0`" in md
    assert ("| py311-torch2.4 · native · onnx | v6.2__py311-torch2.4__native__onnx | "
            "v7.0__py311-torch2.4__native__onnx" in md)
    assert render.read(tmp_path) == json.loads((tmp_path / "upgrade.json").read_text())
    page = html.render(list(done.values()), upgrade=render.read(tmp_path))
    links, anchors = _links(page)
    assert "<h2>Upgrade v6.2 → v7.0</h2>" in page
    assert len(links) == 2 * (8 + 2) and set(links) <= anchors  # every cell of every group links to its drill-down
    (tmp_path / "upgrade.json").write_text("[]")
    assert render.read(tmp_path) is None  # not an answer: skipped with a warning, the report renders without it


def test_report_keeps_the_section(done: dict[str, CellResult], tmp_path: Path) -> None:
    """`python -m harness report` over a folder that `upgrade` wrote re-renders the section from upgrade.json."""
    for result in done.values():
        if result.ref in ("v6.2", "v7.0") and result.env == ENV:
            results.save_result(tmp_path, result)
    render.write(offline(done, Question("v6.2", "v7.0")).to_json(), tmp_path)
    proc = subprocess.run([sys.executable, "-m", "harness", "report", "--reports", str(tmp_path), "--config",
                           str(tmp_path / "none.toml")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "index.html").read_text()
    assert '<section id="upgrade">' in page and "<h2>Upgrade v6.2 → v7.0</h2>" in page


def _links(page: str) -> tuple[list[str], set[str]]:
    """The cell links inside the upgrade section, and every id on the page."""
    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.hrefs: list[str] = []
            self.ids: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if values.get("id"):
                self.ids.add(str(values["id"]))
            if tag == "a" and str(values.get("href", "")).startswith("#cell-"):
                self.hrefs.append(str(values["href"])[1:])

    section = page[page.index('<section id="upgrade">'):]
    inside, whole = Parser(), Parser()
    inside.feed(section[:section.index("</section>")])
    whole.feed(page)
    return inside.hrefs, whole.ids


CHROMIUM = Path("/usr/bin/chromium")


def test_section_in_chromium(done: dict[str, CellResult], tmp_path: Path) -> None:
    """In a real browser: the section sits above the grid, failing groups are open and notes folded, and a cell link
    opens that cell's drill-down; no request leaves the page and nothing is logged."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    model = offline(done, Question("v6.1", "v6.2")).to_json()
    page = html.write(tmp_path / "index.html", list(done.values()), upgrade=model)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        tab.on("pageerror", lambda exc: problems.append(str(exc)))
        tab.on("request", lambda r: problems.append(r.url) if not r.url.startswith("file:") else None)
        tab.goto(page.as_uri())
        section = tab.locator("#upgrade")
        assert section.is_visible() and section.locator("h2").inner_text() == "Upgrade v6.1 → v6.2"
        assert tab.evaluate("document.getElementById('upgrade').getBoundingClientRect().top < "
                            "document.getElementById('grid').getBoundingClientRect().top")
        opened = section.locator("details.upgrade-group").evaluate_all("ds => ds.map(d => [d.dataset.failing, d.open])")
        assert opened and all((failing == "true") == is_open for failing, is_open in opened)
        link = section.locator('details[data-kind="count"] a[href^="#cell-"]').first
        target = str(link.get_attribute("href"))[1:]
        assert not tab.locator(f'details[id="{target}"]').evaluate("d => d.open")
        link.click()
        assert tab.locator(f'details[id="{target}"]').evaluate("d => d.open")
        browser.close()
    assert problems == []


# -- the command line: bad input -------------------------------------------------------------------------------------


def cli(*args: str, cache: Path, timeout: float = 600, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "upgrade", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, "YOLOV5_MATRIX_CACHE": str(cache), **(env or {})})


def _commit(repo: git.Repo, text: str) -> None:
    path = Path(repo.working_tree_dir or ".") / "notes.txt"
    path.write_text(text)
    repo.index.add(["notes.txt"])
    repo.index.commit(text)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main: c0 (tags a, a-again) .. c2 (tag b); an unrelated history on the branch `elsewhere`."""
    path = tmp_path_factory.mktemp("tiny") / "repo"
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "test").set_value("user", "email", "test@example.com")
    for i in range(3):
        _commit(repo, f"c{i}\n")
        if i == 0:
            repo.create_tag("a")
            repo.create_tag("a-again")
    repo.create_tag("b")
    repo.git.checkout("--orphan", "elsewhere")
    repo.git.rm("-rf", ".")
    _commit(repo, "unrelated\n")
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "a", "--to", "a"], "upgrade: --from and --to are both a — nothing changes; pass two different refs"),
    (["--from", "a", "--to", "a-again"], "upgrade: a and a-again are the same commit"),
    (["--from", "a", "--to", "v9.9"], "source: unknown ref 'v9.9' in "),
    (["--from", "a", "--to", "elsewhere"], "have no common history — compare refs of one repository"),
    (["--from", "b", "--to", "a"], "no commits lead from b to a — swap --from and --to"),
    (["--from", "a"], "upgrade: --to is missing"),
    (["--from", "a", "--from-env", ENV], "upgrade: --from-env and --to-env go together"),
    (["--from", "a", "--from-env", ENV, "--to-env", ENV], "upgrade: --from-env and --to-env are both"),
    (["--from", "a", "--to", "b", "--envs", "py311-torch9"], "unknown env 'py311-torch9' in the selection"),
    (["--from", "a", "--to", "b", "--variants", "5"], "unknown variant '5' in the selection"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_repo: Path, tmp_path: Path, args: list[str], message: str) -> None:
    """Each mistake: exit 2, one `error:` line naming it and the fix, nothing written or run."""
    reports = tmp_path / "reports"
    proc = cli(*args, "--repo", str(tiny_repo), "--reports", str(reports), cache=tmp_path / "cache", timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not reports.exists()
    if "unknown ref" in message:
        assert "closest tags: " in errors[0]


# -- one real upgrade through the command line -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.torch
def test_real_upgrade_through_the_command_line(history: Path, history_weights: Path,  # noqa: F811
                                               small_matrix: Callable[..., Path], tmp_path: Path) -> None:
    """A 17-commit history from v6.1's tree: c11 makes the exported Detect return one output, c8 does not export.
    `upgrade --from A --to B` on native TorchScript exits 1 with one failing group (output count 4 -> 1), finds c11
    and skips c8; the reports are written. Asked again it computes nothing; asked about two commits with the same
    outputs it exits 0."""
    from conftest import QUICK_ENV

    config = small_matrix(tmp_path / "matrix.toml", repo=history, refs=["A", "B"], weights=history_weights,
                          variants=("native",), formats=("torchscript",))
    reports = tmp_path / "reports"
    args = ["--config", str(config), "--reports", str(reports), "--envs", QUICK_ENV]
    # torch >= 2.6's weights_only default is not this test's subject: one attempt per cell and probe.
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    cache = Path(os.environ.get("YOLOV5_MATRIX_CACHE", Path.home() / ".cache" / "yolov5-export-matrix"))
    # Ctrl-C after the second probe: exit 130, one line; what was computed stays.
    stopped = subprocess.Popen([sys.executable, "-m", "harness", "upgrade", "--from", "A", "--to", "B", *args],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "YOLOV5_MATRIX_CACHE": str(cache), **env})
    assert stopped.stderr is not None
    seen = next((line for line in iter(stopped.stderr.readline, "") if "bisect A..B: probe 2 " in line), None)
    stopped.send_signal(signal.SIGINT)
    _, tail = stopped.communicate(timeout=120)
    assert seen and stopped.returncode == 130, tail
    assert tail.strip().splitlines()[-1].startswith("interrupted: results saved so far are kept")
    first = cli("--from", "A", "--to", "B", *args, cache=cache, env=env)
    assert first.returncode == 1, first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert lines[0] == "Upgrade A → B: 1 failing group(s), 0 note(s) over 1 cell pair(s)"
    assert lines[4] == "FAIL  output count 4 → 1"
    model = json.loads((reports / "upgrade.json").read_text())
    [count] = model["groups"]
    found = count["bisect"]
    assert found["first"]["subject"] == f"c{DETECT}: export a single output"
    assert [s["subject"] for s in found["skipped"]] == [(f"c{BROKEN}: export notes (the helper comes in the next "
                                                        f"commit)")]
    assert found["probes"] <= found["budget"] <= 5 + 1  # ⌈log2 17⌉ + 1 skipped
    assert sum(s["cached"] for s in found["steps"]) >= 2  # resumed from the probes made before Ctrl-C
    assert (reports / "upgrade.md").is_file() and "Upgrade A → B" in (reports / "index.html").read_text()
    assert (reports / ".upgrade" / "probes" / "results").is_dir()  # probes: ordinary results, apart from the matrix

    again = cli("--from", "A", "--to", "B", *args, cache=cache, env=env)
    assert again.returncode == 1 and "cells: 0 computed, 2 reused" in again.stdout
    assert json.loads((reports / "upgrade.json").read_text())["groups"][0]["bisect"]["first"] == found["first"]

    c16 = git.Repo(history).commit("B").parents[0].hexsha  # c16 -> c17 (B): a changelog line only
    unchanged = cli("--from", c16, "--to", "B", *args, cache=cache, env=env)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr[-2000:]
    assert "no change in 1 cell pair(s) — nothing to edit" in unchanged.stdout
