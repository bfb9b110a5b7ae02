"""harness.decide.upgrade: grouping real results (tests/data-upgrade: upstream YOLOv5 v6.1, v6.2 and v7.0, yolov5n at
160, in
torch 2.4 and 2.14), one group per change and the axis it came with, the edits a deployer makes (each once), the
reports and their line budget, bad input through the command line, and real upgrades through the command line: on a
small YOLOv5 history (exit code, bisect, a rerun that computes nothing, one line per probe), and with pinned output
names on upstream's v6.2 and v7.0."""

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

from harness.decide import diff
from harness.decide.upgrade import render
from harness.decide.upgrade.question import Answer, GroupAnswer, Question, answer_of
from harness.report import html
from harness.results import model as results
from harness.results.model import CellResult

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data-upgrade"
ENV, NEW_ENV = "py311-torch2.4", "py311-torch2.14"
VARIANTS = ["native", "1", "3", "4"]
FORMATS = ["onnx", "onnx-dynamic", "torchscript"]
WEIGHTS_ONLY, DYNAMO = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", "dynamo=False"


@pytest.fixture(scope="module")
def done() -> dict[str, CellResult]:
    found = {r.cell: r for r in results.merge_results([DATA])}
    assert len(found) == 48  # v6.1, v6.2, v7.0 in torch 2.4 and v7.0 in torch 2.14, 12 cells each
    return found


def offline(done: dict[str, CellResult], q: Question, envs: list[str] = [ENV],  # noqa: B006
            variants: list[str] = VARIANTS, formats: list[str] = FORMATS) -> Answer:
    """The answer the command gives for these results, without running or searching anything."""
    return answer_of(q, envs, variants, formats, done)


def groups(answer: Answer) -> list[tuple[str, bool, str, str]]:
    return [(g.group.kind, g.group.failing, g.group.title, g.scope) for g in answer.groups]


def edits(answer: Answer, kind: str) -> list[str]:
    [found] = [g for g in answer.groups if g.group.kind == kind]
    return [answer.edits[i].text() for i in found.edits]


def cells(ga: GroupAnswer) -> list[str]:
    return [f"{s.variant} {s.format}" for s in ga.group.slots]


# -- one group per change --------------------------------------------------------------------------------------------


def test_a_torch_upgrade_is_two_changes_not_four_verdicts(done: dict[str, CellResult]) -> None:
    """v7.0 from torch 2.4 to 2.14, native and variant 3 in ONNX and TorchScript: the cells read three different
    verdicts (variant 3 also keeps its patch form), but two things changed: torch >= 2.6's torch.load weights_only
    default (all 4 cells) and the dynamo ONNX exporter (the 2 ONNX cells). Each is one group with its own edit; the
    dynamo edit names its own cause, not the out-of-the-box one of the other change."""
    q = Question("v7.0", "v7.0", ENV, NEW_ENV, variants=("native", "3"), formats=("onnx", "torchscript"))
    answer = offline(done, q, variants=["native", "3"], formats=["onnx", "torchscript"])
    assert [(g.group.kind, g.group.after, g.group.axis, cells(g)) for g in answer.groups] == [
        ("workaround", WEIGHTS_ONLY, "env", ["native onnx", "native torchscript", "3 onnx", "3 torchscript"]),
        ("workaround", DYNAMO, "env", ["native onnx", "3 onnx"]),
    ]
    assert answer.exit_code == 1
    assert [g.group.title for g in answer.groups] == [f"newly needs workaround {WEIGHTS_ONLY}",
                                                      f"newly needs workaround {DYNAMO}"]
    weights, dynamo = ([answer.edits[i] for i in g.edits] for g in answer.groups)
    assert [e.text() for e in weights] == [
        (f"add to the export's environment: `export {WEIGHTS_ONLY}` — restores torch.load's pre-2.6 default; safe only "
         f"for a checkpoint you trust (the harness's own is); for: torch.load weights_only")]
    [dynamo_edit] = dynamo
    assert dynamo_edit.what == "edit the export script (dynamo=False)" and dynamo_edit.where == "format onnx"
    assert "weights_only" not in dynamo_edit.text() and dynamo_edit.note.endswith("for: ONNX dynamo exporter")
    # where each comes from: the env, with the packages that moved (no search offline)
    env = answer.groups[0].env_finding
    assert env is not None and (env.old, env.new, env.searched) == (ENV, NEW_ENV, False)
    assert env.moved[0] == ("torch", "2.4.1", "2.14.1")  # torch first, local version labels dropped
    accepted = offline(done, Question("v7.0", "v7.0", ENV, NEW_ENV, accept_workarounds=True))
    assert accepted.exit_code == 0
    assert all(not g.group.failing and g.group.waived == "--accept-workarounds" for g in accepted.groups)


def test_v6_2_to_v7_0_is_one_rename_in_every_variant(done: dict[str, CellResult]) -> None:
    """Upstream renamed the ONNX output `output` -> `output0` (#9465): one failing group of the 8 ONNX cells (every
    variant, static and dynamic), not 8 lines; the torch-made names behind it (`onnx::Sigmoid_411` -> `_412`) are a
    note of their own, said plainly; TorchScript has no names and does not change. A cell with both changes is in
    both groups."""
    answer = offline(done, Question("v6.2", "v7.0"))
    assert groups(answer) == [
        ("name", True, "ONNX output #0 renamed `output` → `output0`",
         "8 cells: env py311-torch2.4 · every variant · formats onnx/onnx-dynamic"),
        ("auto-name", False, ("made-up ONNX output names changed: such names change with any graph edit; do "
                             "not write configs on them"), ("2 cells: env py311-torch2.4 · variant 4 · formats "
                                                          "onnx/onnx-dynamic")),
    ]
    assert {g.group.axis for g in answer.groups} == {"ref"}
    assert answer.exit_code == 1
    rename = answer.groups[0]
    representative = diff.representative(rename.group, [ENV])
    assert representative.pair.slot == diff.Slot(ENV, "native", "onnx")  # the native cell is the one probed
    assert diff.probe_ends(rename.group, representative) == ("output", "output0")


def test_tpu_mlir_output_names_before_and_after(done: dict[str, CellResult]) -> None:
    """The --output_names value per variant and format, as the ONNX files have them; made-up names flagged."""
    texts = edits(offline(done, Question("v6.2", "v7.0")), "name")
    assert texts[0] == ("tpu-mlir model_transform (variants native/1 · formats onnx/onnx-dynamic): "
                        "`--output_names output` → `--output_names output0`")
    assert texts[1] == ("tpu-mlir model_transform (variant 3 · format onnx): `--output_names output,354,366` → "
                        "`--output_names output0,354,366` — auto-generated: `354`, `366` — such names change with any "
                        "graph edit; do not write configs on them")
    assert len(texts) == 5  # variants 3 and 4 each have their own lists in onnx and onnx-dynamic


def test_one_edit_for_two_groups(done: dict[str, CellResult]) -> None:
    """v6.1 -> v7.0: the native ONNX export loses 3 outputs and its first is renamed; the new --output_names is one
    edit, written once for both groups."""
    answer = offline(done, Question("v6.1", "v7.0"))
    kinds = [g.group.kind for g in answer.groups]
    count, name = kinds.index("count"), kinds.index("name")
    shared = [e for e in answer.edits if e.groups == [count, name]]
    assert [e.where for e in shared] == ["variant native · format onnx", "variant native · format onnx-dynamic"]
    assert all(e.before and e.before.startswith("--output_names output,onnx::Sigmoid_") for e in shared)
    texts = [e.text() for e in answer.edits]
    assert len(texts) == len(set(texts))
    md = render.markdown(answer.to_json())
    assert all(md.count(f"`{e.before}` → `{e.after}`") == 1 for e in shared)


def test_native_count_change_names_the_patch_variant_that_keeps_the_old_outputs(done: dict[str, CellResult]) -> None:
    """v6.1 -> v6.2: the native export drops from 4 outputs to 1 (#7259); variant 4 (the guide's line) exports the old
    four on v6.2, which the advice reads off v6.2's own variant-4 result."""
    answer = offline(done, Question("v6.1", "v6.2"))
    count = next(g for g in answer.groups if g.group.kind == "count")
    assert count.group.failing and count.group.title == "output count 4 → 1"
    assert count.scope == "3 cells: env py311-torch2.4 · variant native · every format"
    texts = [answer.edits[i].text() for i in count.edits]
    keep = [t for t in texts if t.startswith("to keep the old 4 outputs")]
    assert keep == [("to keep the old 4 outputs, patch Detect.forward's return in models/yolo.py (variant 4) "
                     "(variant native): `return x if self.training else (torch.cat(z, 1), x)` — variant 4 exports "
                     "1x1575x85, 1x3x20x20x85, 1x3x10x10x85, 1x3x5x5x85 on v6.2 (works)")]
    assert any(t.startswith("tpu-mlir model_transform (variant native · format onnx): `--output_names output,onnx::"
                            "Sigmoid_") and t.endswith("do not write configs on them") for t in texts)


def test_both_axes_tell_the_ref_change_from_the_env_change(done: dict[str, CellResult]) -> None:
    """v6.2 in torch 2.4 -> v7.0 in torch 2.14: the corner (v7.0 in torch 2.4) already has the rename, so it is
    YOLOv5's (probed between v6.2 and the corner, in torch 2.4); the workarounds come with the env (between the corner
    and v7.0 in torch 2.14), with the packages that moved."""
    answer = offline(done, Question("v6.2", "v7.0", ENV, NEW_ENV))
    by_title = {g.group.title: g for g in answer.groups}
    rename = by_title["ONNX output #0 renamed `output` → `output0`"]
    weights = by_title[f"newly needs workaround {WEIGHTS_ONLY}"]
    dynamo = by_title[f"newly needs workaround {DYNAMO}"]
    assert (rename.group.axis, weights.group.axis, dynamo.group.axis) == ("ref", "env", "env")
    assert (len(rename.group.members), len(weights.group.members), len(dynamo.group.members)) == (8, 12, 8)
    member = diff.representative(rename.group, answer.envs)
    start, end = member.pair.ends("ref")
    assert (start and start.cell, end and end.cell) == ("v6.2__py311-torch2.4__native__onnx",
                                                        "v7.0__py311-torch2.4__native__onnx")
    assert diff.probe_ends(rename.group, member) == ("output", "output0")
    member = diff.representative(weights.group, answer.envs)
    assert diff.probe_ends(weights.group, member) == (f"works without {WEIGHTS_ONLY}", f"needs {WEIGHTS_ONLY}")
    env = weights.env_finding
    assert env is not None and (env.old, env.new) == (ENV, NEW_ENV) and ("torch", "2.4.1", "2.14.1") in env.moved
    assert rename.env_finding is None
    model = answer.to_json()
    assert [g["axis"] for g in model["groups"]] == [g.group.axis for g in answer.groups]
    assert render.origin(model["groups"][[g.group for g in answer.groups].index(weights.group)], short=True) == (
        f"env {ENV} → {NEW_ENV} (torch 2.4.1 → 2.14.1, torchvision 0.19.1 → 0.29.1, +5 more)")


def test_the_corner_decides_the_axis() -> None:
    """A change the corner already shows is YOLOv5's; one it does not show is the env's; an output count that changes
    with the ref and a workaround that comes with the env, in one cell pair, are two groups."""
    def facts(ref: str, env: str, n: int, fix: str | None) -> diff.Facts:
        return diff.Facts(cell=f"{ref}__{env}__native__onnx", ref=ref, env=env, variant="native", format="onnx",
                          outcome="workaround" if fix else "works", fix=fix,
                          outputs=[diff.OutputFacts(f"output{i}", [1, 2]) for i in range(n)])

    pair = diff.Pair(diff.Slot("X → Y", "native", "onnx"), facts("A", "X", 4, None), facts("B", "Y", 1, DYNAMO),
                     corner=facts("B", "X", 1, None))
    found = diff.group([pair])
    assert [(g.kind, g.axis, g.before, g.after) for g in found] == [("workaround", "env", "", DYNAMO),
                                                                    ("count", "ref", "4", "1")]


def test_no_change_is_nothing_to_edit(done: dict[str, CellResult]) -> None:
    answer = offline(done, Question("v7.0", "v7.0", ENV, ENV, variants=("native",)), envs=[ENV])
    model = answer.to_json()
    assert answer.exit_code == 0 and model["groups"] == [] and model["edits"] == []
    assert render.console(model).splitlines()[0].endswith("no change in 12 cell pair(s) — nothing to edit")


def test_auto_names() -> None:
    made_up = ["403", "1182", "onnx::Sigmoid_345", "/model.24/Sigmoid_output_0", "clone", "clone_2"]
    given = ["output", "output0", "output0_1", "images", "boxes"]
    assert all(diff.is_auto_name(n) for n in made_up)
    assert not any(diff.is_auto_name(n) for n in given)


def test_pinned_runs_replace_made_up_names_where_they_check_out(done: dict[str, CellResult]) -> None:
    """A pair whose ONNX outputs carry made-up names is compared on its runs with the names pinned, when those runs
    stand as the unpinned ones do; otherwise it stays as exported, with a note saying why. (Real pinned exports: see
    test_pinned_names_survive_v6_2_to_v7_0.)"""
    from harness.decide.upgrade.question import needs_pinning, pin

    q = Question("v6.2", "v7.0", variants=("3",), formats=("onnx",))
    pairs = offline(done, q, variants=["3"], formats=["onnx"]).pairs
    assert [needs_pinning(p) for p in pairs] == [True]
    pinned = {}
    for cell in ("v6.2__py311-torch2.4__3__onnx", "v7.0__py311-torch2.4__3__onnx"):
        result = CellResult.from_json(done[cell].to_json())
        for i, output in enumerate(result.deciding.outputs):
            output.name = f"output{i}"
        result.options = ["pinned output names"]
        pinned[cell] = result
    [kept], notes = pin(pairs, pinned)
    assert notes == [] and kept.pinned == "out of the box `output,354,366` → `output0,354,366`"
    assert [(g.kind, g.failing) for g in diff.group([kept])] == [("pinned-names", False)]
    broken = CellResult.from_json(pinned["v7.0__py311-torch2.4__3__onnx"].to_json())
    broken.deciding.status = "fail"
    [unpinned], notes = pin(pairs, {**pinned, broken.cell: broken})
    assert unpinned.pinned == "" and unpinned.after == pairs[0].after
    assert notes == [("pinned output names did not check out on py311-torch2.4 · 3 · onnx: "
                      "v7.0__py311-torch2.4__3__onnx reads broken: unclassified with it (works with workaround patch "
                      "form tuple(x) without)")]


# -- the reports -----------------------------------------------------------------------------------------------------


def test_console_prints_groups_not_cells(done: dict[str, CellResult]) -> None:
    model = offline(done, Question("v6.2", "v7.0")).to_json()
    text = render.console(model)
    assert [line.split("  ")[0] for line in text.splitlines() if line[:4] in ("FAIL", "note")] == ["FAIL", "note"]
    assert "__" not in text  # no cell ids: one line per group, its cells summarised
    assert text.splitlines()[0] == "Upgrade v6.2 → v7.0: 1 failing group(s), 1 note(s) over 12 cell pair(s)"
    assert "FAIL  [1] ONNX output #0 renamed `output` → `output0`" in text.splitlines()
    assert text.count("--output_names output`") == 1  # each edit once


def test_markdown_opens_with_a_short_summary_and_fits_the_budget(done: dict[str, CellResult]) -> None:
    """upgrade.md: at most 15 summary lines (groups, where they come from, edits), then the cells; v6.1 -> v7.0 in one
    env, every variant and format, stays under 50 lines. A question with more than fits says how many follow."""
    for q in (Question("v6.1", "v7.0"), Question("v6.2", "v7.0"), Question("v7.0", "v7.0", ENV, NEW_ENV)):
        model = offline(done, q).to_json()
        summary = render.summary(model)
        md = render.markdown(model).splitlines()
        assert len(summary) <= render.SUMMARY_LINES and md[: len(summary)] == summary
        assert md[0].startswith(f"## {q.title} — ✘ ")
        assert any(line.startswith("| cell | groups |") for line in md[len(summary):])
    md = render.markdown(offline(done, Question("v6.1", "v7.0")).to_json()).splitlines()
    assert len(md) < 50
    summary = render.summary(offline(done, Question("v6.1", "v7.0")).to_json())
    assert summary[-1].startswith("… ") and summary[-1].endswith("more edit(s): see below")
    assert "### The rest of the groups and edits" in md


def test_json_to_stdout_and_the_step_summary(done: dict[str, CellResult], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """In GitHub Actions the summary is appended to $GITHUB_STEP_SUMMARY (other steps' lines stay)."""
    model = offline(done, Question("v6.2", "v7.0")).to_json()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert render.step_summary(model) is None
    page = tmp_path / "summary.md"
    page.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(page))
    assert render.step_summary(model) == page
    assert page.read_text() == "earlier step\n" + "\n".join(render.summary(model)) + "\n\n"


def test_markdown_json_and_html_section(done: dict[str, CellResult], tmp_path: Path) -> None:
    """upgrade.md and upgrade.json are written together; the report shows the section from upgrade.json (also when
    `report` re-renders the folder), with a link from each cell of a group to its drill-down."""
    model = offline(done, Question("v6.2", "v7.0")).to_json()
    render.write(model, tmp_path)
    md = (tmp_path / "upgrade.md").read_text()
    assert md.startswith("## Upgrade v6.2 → v7.0 — ✘ 1 failing change(s), 1 note(s)")
    assert "1. ✘ ONNX output #0 renamed `output` → `output0` — 8 cells" in md
    assert "| 4 · onnx | 1, 2 | #3 `onnx::Sigmoid_411` → `onnx::Sigmoid_412` |" in md
    assert render.read(tmp_path) == json.loads((tmp_path / "upgrade.json").read_text())
    page = html.render(list(done.values()), upgrade=render.read(tmp_path))
    links, anchors = _links(page)
    assert "<h2>Upgrade v6.2 → v7.0</h2>" in page
    assert len(links) == 2 * (8 + 2) and set(links) <= anchors  # every cell of every group links to its drill-down
    assert "--output_names output0,354,366" in page  # the group's edits, looked up in the answer's edit list
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
    # SIGINT as a terminal's Ctrl-C delivers it, even where this test runs as a background job (a shell without job
    # control starts those with SIGINT ignored, and the child would inherit that).
    stopped = subprocess.Popen([sys.executable, "-m", "harness", "upgrade", "--from", "A", "--to", "B", *args],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "YOLOV5_MATRIX_CACHE": str(cache), **env},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
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
    assert lines[4] == "FAIL  [1] output count 4 → 1"
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
