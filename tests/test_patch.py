"""harness.patch.detect on small hand-written Detect modules, on every stand-in tag, and (with torch) on real forwards.

The synthetic modules below are minimal: just enough of a Detect to carry each return shape the patcher knows. The
stand-in tags come from the `mirror_repo` fixture (tests/conftest.py); the torch tests from `env_python`. Both are
skipped when the fixture is not available.
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import subprocess
import tarfile
import textwrap
from pathlib import Path

import git
import pytest

from harness.errors import PatchError
from harness.patch.detect import (
    DIFF_NAME,
    GUIDE_RETURNS,
    NPU_STATEMENT,
    STAMP_NAME,
    VARIANTS,
    adaptation_of,
    apply_patch,
    expected_output_count,
    patch_source,
)

PATCHED = ("1", "3", "4")
TAGS = ("v5.0", "v6.0", "v6.1", "v6.2", "v7.0")  # matrix.toml [source].refs, all of them stand-in tags
P5, P6 = "models/yolov5s.yaml", "models/hub/yolov5s6.yaml"

# --- synthetic models/yolo.py texts, one per known return shape -------------------------------------------------------

_MODULE = '''\
"""A made-up yolo.py: a Detect, a class with the same forward that must be left alone, and a Segment(Detect)."""
import torch
import torch.nn as nn


class IDetect(nn.Module):
    export = False

    def forward(self, x):
{body}

class Detect(nn.Module):
    export = False  # export mode

    def forward(self, x):
{body}
    def _make_grid(self, nx=20, ny=20):
        return torch.zeros(1, 1, ny, nx, 2)


class Segment(Detect):
    def forward(self, x):
        p = x[0]
        x = Detect.forward(self, x)
        return (x, p) if self.training else (x[0], p) if self.export else (x[0], p, x[1])
'''

_LOOP = """\
for i in range(self.nl):
    x[i] = self.m[i](x[i])  # conv
    if not self.training:
        z.append(x[i].sigmoid().flatten(1, 3))
"""


def _module(*statements: str) -> str:
    """A synthetic yolo.py whose Detect.forward (and IDetect.forward) is `z = []`, `statements`, the loop, a return."""
    body = ["z = []  # inference output", *statements[:-1], _LOOP, "", statements[-1]]
    return _MODULE.format(body=textwrap.indent("\n".join(body), " " * 8))


# The three shapes, written the way the releases write them (whitespace and comments are not part of the shape).
SYNTHETIC = {
    "v5.0": _module("self.training |= self.export", "return x if self.training else (torch.cat(z, 1), x)"),
    "v6.0": _module("return x if self.training else (torch.cat(z, 1), x)  # comment"),
    "v7.0": _module(
        "return x if self.training else (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)",
    ),
}

# --- independent checks of a patched text (plain ast, nothing from harness.patch.detect) ------------------------------


def _class(source: str, name: str) -> ast.ClassDef:
    return next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name)


def _forward(source: str, cls: str = "Detect") -> ast.FunctionDef:
    return next(n for n in _class(source, cls).body if isinstance(n, ast.FunctionDef) and n.name == "forward")


def _last_return(fn: ast.FunctionDef) -> ast.Return:
    return [s for s in fn.body if isinstance(s, ast.Return)][-1]


def _is_cat_z(node: ast.expr) -> bool:
    return ast.unparse(node) == "torch.cat(z, 1)"


def _is_raw_x(node: ast.expr) -> bool:
    return ast.unparse(node) in ("x", "tuple(x)")  # the list itself, or its tensors as a tuple


def _inference_kind(source: str) -> str:
    """What Detect.forward returns outside training: '1' (decoded), '3' (raw levels), '4' (both) or its source."""
    ret = _last_return(_forward(source)).value
    assert isinstance(ret, ast.IfExp) and ast.unparse(ret.test) == "self.training", ast.unparse(ret)  # type: ignore[arg-type]
    assert ast.unparse(ret.body) == "x", "training must still return the raw list (strides, loss)"
    out = ret.orelse
    if _is_cat_z(out):
        return "1"
    if _is_raw_x(out):
        return "3"
    if isinstance(out, ast.Tuple) and len(out.elts) == 2 and _is_cat_z(out.elts[0]) and _is_raw_x(out.elts[1]):
        return "4"
    return ast.unparse(out)


def _export_reads(fn: ast.FunctionDef) -> list[str]:
    """Statements inside fn whose own expressions (not their nested statements) read self.export."""
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.stmt) and node is not fn:
            own = [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.stmt)]
            if any("self.export" in ast.unparse(c) for c in own if isinstance(c, ast.expr)):
                found.append(ast.unparse(node).splitlines()[0])
    return found


def _changed_lines(before: str, after: str) -> set[int]:
    """1-based line numbers of `before` that `after` replaced or deleted."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    return {i + 1 for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for i in range(i1, i2)}


def _stmt_lines(fn: ast.FunctionDef, pred: object) -> set[int]:
    return {
        line
        for node in ast.walk(fn)
        if isinstance(node, ast.stmt) and pred(node)  # type: ignore[operator]
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }


# Where the harness adapts the guide's line (and how): the shapes' own finding, checked independently here.
ADAPTED = {("v5.0", "1"), ("v5.0", "4"), ("v7.0", "3")}


def _check_patched(before: str, after: str, variant: str, form: str = "guide") -> None:
    """Everything a patched yolo.py must satisfy, whatever the release."""
    compile(after, "models/yolo.py", "exec")
    assert _inference_kind(after) == variant
    fn_before = _forward(before)
    # Only the last return and lines reading self.export (the switches) may change, and only inside Detect.forward.
    allowed = _stmt_lines(fn_before, lambda n: n is _last_return(fn_before)) | _stmt_lines(
        fn_before, lambda n: not isinstance(n, (ast.For, ast.If)) and "self.export" in ast.unparse(n)
    )
    changed = _changed_lines(before, after)
    assert changed and changed <= allowed, (changed, allowed)
    if variant in ("1", "4") and form == "adapted":  # decoded outputs: the exporter's export flag cannot skip them
        assert _export_reads(_forward(after)) == []
    assert "self.export" not in ast.unparse(_last_return(_forward(after)))
    for cls in ("Segment", "IDetect"):
        if any(isinstance(n, ast.ClassDef) and n.name == cls for n in ast.parse(before).body):
            assert ast.dump(_class(after, cls)) == ast.dump(_class(before, cls)), f"{cls} must be untouched"


# --- synthetic tests --------------------------------------------------------------------------------------------------


def test_variants_are_the_product_names() -> None:
    assert VARIANTS == ("native", "1", "3", "4", "npu")


@pytest.mark.parametrize(
    ("variant", "nl", "count"),
    [("native", 3, None), ("1", 3, 1), ("3", 3, 3), ("4", 3, 4), ("1", 4, 1), ("3", 4, 4), ("4", 4, 5), ("npu", 3, 3),
     ("npu", 4, 4)],
)
def test_expected_output_count(variant: str, nl: int, count: int | None) -> None:
    assert expected_output_count(variant, nl) == count


def test_expected_output_count_p6_raw_levels() -> None:
    # models/hub/yolov5s6.yaml has 4 detection layers (P3-P6): "3" means raw per-level, so 4 outputs there.
    assert expected_output_count("3", 4) == 4


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(PatchError, match="unknown variant '2'"):
        patch_source(SYNTHETIC["v6.0"], "2", "v6.0")
    with pytest.raises(PatchError, match="unknown variant"):
        expected_output_count("2", 3)


@pytest.mark.parametrize("shape", sorted(SYNTHETIC))
def test_the_npu_form_is_the_first_statement_and_nothing_else_changes(shape: str) -> None:
    """Variant npu inserts one line, first in Detect.forward (before v5.0's `self.training |= self.export`): the
    return, the export switches, Segment and every other line stay as they were; patching again changes nothing."""
    before = SYNTHETIC[shape]
    after = patch_source(before, "npu", shape)
    first = _forward(after).body[0]
    assert ast.unparse(first) == ast.unparse(ast.parse(NPU_STATEMENT).body[0])
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(added) == 1 and "yolov5-export-matrix: variant=npu" in added[0]
    assert len(after.splitlines()) == len(before.splitlines()) + 1
    assert ast.dump(_last_return(_forward(after))) == ast.dump(_last_return(_forward(before)))
    assert patch_source(after, "npu", shape) == after
    with pytest.raises(PatchError, match="no adapted form of variant npu"):
        patch_source(before, "npu", shape, "adapted")
    with pytest.raises(PatchError, match="already patched for variant npu"):
        patch_source(after, "3", shape)


@pytest.mark.parametrize("shape", sorted(SYNTHETIC))
@pytest.mark.parametrize("variant", PATCHED)
def test_synthetic_shapes_patch(shape: str, variant: str) -> None:
    before = SYNTHETIC[shape]
    forms = ("guide", "adapted") if (shape, variant) in ADAPTED else ("guide",)
    for form in forms:
        after = patch_source(before, variant, shape, form)
        _check_patched(before, after, variant, form)
        assert patch_source(after, variant, shape, form) == after  # idempotent
    assert (adaptation_of(before, variant) is not None) == ((shape, variant) in ADAPTED)


@pytest.mark.parametrize("shape", sorted(SYNTHETIC))
@pytest.mark.parametrize("variant", PATCHED)
def test_the_guide_form_is_the_guide_line_as_printed(shape: str, variant: str) -> None:
    # Sophgo's guide: `return x if self.training else (torch.cat(z, 1), x)  # 4 outputs`, `... else x  # 3 outputs`,
    # `... else (torch.cat(z, 1))  # 1 output`. Nothing else in forward changes: export switches stay.
    after = patch_source(SYNTHETIC[shape], variant, shape)
    assert ast.unparse(_last_return(_forward(after))) == ast.unparse(ast.parse(f"return {GUIDE_RETURNS[variant]}"))
    def switches(source: str) -> list[str]:
        return [line for line in _export_reads(_forward(source)) if not line.startswith("return ")]

    assert switches(after) == switches(SYNTHETIC[shape])


def test_v50_adapted_form_neutralises_the_switch_for_decoded_variants() -> None:
    src = SYNTHETIC["v5.0"]
    for variant in ("1", "4"):
        fn = _forward(patch_source(src, variant, "v5.0", "adapted"))
        assert isinstance(fn.body[1], ast.Pass), "the `self.training |= self.export` line becomes pass"
    # Variant 3 is raw either way: the guide's line is its only form.
    with pytest.raises(PatchError, match=r"no adapted form of variant 3 at v5\.0"):
        patch_source(src, "3", "v5.0", "adapted")


def test_v70_adapted_raw_levels_are_a_tuple() -> None:
    # v6.2+ export.py reads the dry run as `(y[0] if isinstance(y, tuple) else y).shape`: the guide's list aborts it.
    ret = _last_return(_forward(patch_source(SYNTHETIC["v7.0"], "3", "v7.0", "adapted")))
    assert ast.unparse(ret.value.orelse) == "tuple(x)"  # type: ignore[union-attr]
    guide = _last_return(_forward(patch_source(SYNTHETIC["v7.0"], "3", "v7.0")))
    assert ast.unparse(guide.value.orelse) == "x"  # type: ignore[union-attr]


def test_a_guide_patched_text_is_not_repatched_in_another_form() -> None:
    once = patch_source(SYNTHETIC["v7.0"], "3", "v7.0")
    with pytest.raises(PatchError, match="already patched for variant 3; patch a clean checkout"):
        patch_source(once, "3", "v7.0", "adapted")


def test_native_is_untouched() -> None:
    for text in (*SYNTHETIC.values(), "not python at all (", ""):
        assert patch_source(text, "native", "vX") is text


def test_indentation_and_crlf_kept() -> None:
    src = SYNTHETIC["v6.0"].replace("    ", "\t").replace("\n", "\r\n")
    after = patch_source(src, "1", "tabs")
    ret_line = next(line for line in after.split("\r\n") if "return x if self.training else (torch.cat" in line)
    assert ret_line.startswith("\t\treturn ")
    assert after.count("\r\n") == src.count("\r\n") and "\n" not in after.replace("\r\n", "")
    _check_patched(src.replace("\r\n", "\n"), after.replace("\r\n", "\n"), "1")


def test_multiline_return_replaced_whole() -> None:
    src = SYNTHETIC["v6.0"].replace(
        "return x if self.training else (torch.cat(z, 1), x)  # comment",
        "return x if self.training else (\n            torch.cat(z, 1),\n            x)",
    )
    after = patch_source(src, "3", "multi")
    _check_patched(src, after, "3")
    assert len(after.splitlines()) == len(src.splitlines()) - 2


@pytest.mark.parametrize(
    ("source", "says"),
    [
        pytest.param(_module("return x if self.training else torch.cat(z, 1)"),
                     "ends in `return x if self.training else torch.cat(z, 1)` (line", id="unknown-return"),
        pytest.param(_module("return y if self.training else (torch.cat(z, 1), y)"),
                     "not a return the guide's edit applies to (expected `return x if", id="other-names"),
        pytest.param(_module("x = x", "return x if self.training else (torch.cat(z, 1), x)").replace(
            "class Detect(", "class Detector("), "no `def forward` in a module-level `class Detect`",
            id="no-detect-class"),
        pytest.param(SYNTHETIC["v6.0"].replace("    def forward(self, x):\n        z = []", "    def fwd(self, x):\n"
                                               "        z = []"), "no `def forward`", id="no-forward"),
        pytest.param(_module("x = x", "pass"), "has no top-level `return`", id="no-return"),
        pytest.param(SYNTHETIC["v6.0"].replace("return x if", "y = 1; return x if"),
                     "Detect.forward return not recognised", id="return-shares-a-line"),
        pytest.param("class Detect(:\n", "does not parse", id="syntax-error"),
    ],
)
@pytest.mark.parametrize("variant", PATCHED)
def test_unrecognised_forward_is_refused(source: str, says: str, variant: str) -> None:
    """One line naming the statement it could not find or did not know, and what it expected."""
    with pytest.raises(PatchError) as info:
        patch_source(source, variant, "vX")
    message = str(info.value)
    assert message.startswith("patch: ") and " vX" in message and "\n" not in message
    assert says in message


@pytest.mark.parametrize(
    ("source", "adapted"),
    [
        pytest.param(_module("self.training |= self.export", "return x if self.training else (torch.cat(z, 1),) if "
                             "self.export else (torch.cat(z, 1), x)"), "3", id="known-return-unknown-switch-combo"),
        pytest.param(_module("if self.export:\n    z = z[:1]", "self.training |= self.export",
                             "return x if self.training else (torch.cat(z, 1), x)"), "1", id="unknown-export-switch"),
    ],
)
@pytest.mark.parametrize("variant", PATCHED)
def test_fork_switches_keep_the_guide_edit(source: str, adapted: str, variant: str) -> None:
    """A fork's own export switches: the guide's edit still goes to the real return (the switches stay as written);
    the adapted form, which rewrites the switches, is refused naming the ones it found and the ones it expected."""
    after = patch_source(source, variant, "fork")
    _check_patched(source, after, variant)
    with pytest.raises(PatchError, match=r"^patch: Detect.forward at fork reads self.export in \[`.*`\], not in the "
                                         r"statements the adapted form rewrites \(expected \[.*\]\)$"):
        patch_source(source, adapted, "fork", form="adapted")


def test_repatching_another_variant_is_refused() -> None:
    once = patch_source(SYNTHETIC["v7.0"], "1", "v7.0")
    with pytest.raises(PatchError, match="already patched for variant 1; patch a clean checkout"):
        patch_source(once, "4", "v7.0")


# --- apply_patch on a real tree ---------------------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A small YOLOv5-shaped git work tree (v7.0 shape) with a .git directory that must not be copied."""
    root = tmp_path / "checkout"
    (root / "models").mkdir(parents=True)
    (root / "models" / "yolo.py").write_text(SYNTHETIC["v7.0"], encoding="utf-8")
    (root / "export.py").write_text("print('export')\n", encoding="utf-8")
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "images" / "zidane.jpg").write_bytes(b"\xff\xd8not-really-a-jpeg")
    repo = git.Repo.init(root)
    repo.index.add(["models/yolo.py", "export.py", "data/images/zidane.jpg"])
    repo.index.commit("v7.0", author=git.Actor("T", "t@example.com"), committer=git.Actor("T", "t@example.com"))
    repo.close()
    return root


def _git_apply_reproduces(checkout: Path, dest: Path, diff: str, tmp: Path) -> None:
    """`git apply` of patch.diff onto the pristine yolo.py gives exactly the patched file (the diff is real)."""
    work = tmp / "apply"
    (work / "models").mkdir(parents=True)
    (work / "models" / "yolo.py").write_bytes((checkout / "models" / "yolo.py").read_bytes())
    (work / "p.diff").write_text(diff, encoding="utf-8")
    subprocess.run(["git", "apply", "p.diff"], cwd=work, check=True, capture_output=True)
    assert (work / "models" / "yolo.py").read_bytes() == (dest / "models" / "yolo.py").read_bytes()


@pytest.mark.parametrize("variant", PATCHED)
def test_apply_patch_writes_tree_diff_and_stamp(checkout: Path, tmp_path: Path, variant: str) -> None:
    dest = tmp_path / "cache" / variant
    diff = apply_patch(checkout, dest, variant, "v7.0")
    assert not (dest / ".git").exists()
    assert (dest / "export.py").read_bytes() == (checkout / "export.py").read_bytes()
    image = Path("data", "images", "zidane.jpg")
    assert (dest / image).read_bytes() == (checkout / image).read_bytes()
    patched = (dest / "models" / "yolo.py").read_text(encoding="utf-8")
    _check_patched(SYNTHETIC["v7.0"], patched, variant)
    assert (checkout / "models" / "yolo.py").read_text(encoding="utf-8") == SYNTHETIC["v7.0"], "checkout untouched"
    assert diff.startswith("--- a/models/yolo.py\n+++ b/models/yolo.py\n@@ ")
    assert (dest / DIFF_NAME).read_text(encoding="utf-8") == diff
    assert json.loads((dest / STAMP_NAME).read_text(encoding="utf-8"))["variant"] == variant
    _git_apply_reproduces(checkout, dest, diff, tmp_path)
    assert [p.name for p in dest.parent.iterdir()] == [variant], "no temporary build dirs left behind"


def test_apply_patch_native_copies_unchanged(checkout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "native"
    assert apply_patch(checkout, dest, "native", "v7.0") == ""
    assert (dest / "models" / "yolo.py").read_bytes() == (checkout / "models" / "yolo.py").read_bytes()
    assert (dest / DIFF_NAME).read_text(encoding="utf-8") == ""


def test_apply_patch_reuses_a_matching_copy(checkout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "p"
    first = apply_patch(checkout, dest, "4", "v7.0")
    sentinel = dest / "ckpt-seed0.pt"  # something a later stage left in the copy: reuse must keep it
    sentinel.write_bytes(b"weights")
    assert apply_patch(checkout, dest, "4", "v7.0") == first
    assert sentinel.exists()


def test_apply_patch_rebuilds_when_variant_or_tree_changes(checkout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "p"
    apply_patch(checkout, dest, "4", "v7.0")
    (dest / "marker").write_text("old copy", encoding="utf-8")
    apply_patch(checkout, dest, "1", "v7.0")
    assert not (dest / "marker").exists()
    assert _inference_kind((dest / "models" / "yolo.py").read_text(encoding="utf-8")) == "1"

    (dest / "marker").write_text("old copy", encoding="utf-8")
    # Same yolo.py, different exporter (as PyPI 6.2.3 vs 7.0.0): the copy must not be reused.
    (checkout / "export.py").write_text("print('another exporter')\n", encoding="utf-8")
    apply_patch(checkout, dest, "1", "v7.0")
    assert not (dest / "marker").exists()
    assert (dest / "export.py").read_text(encoding="utf-8") == "print('another exporter')\n"


def test_apply_patch_never_replaces_foreign_dirs(checkout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(PatchError, match="is not a patched copy; remove it or choose another destination"):
        apply_patch(checkout, dest, "1", "v7.0")
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkout", "precious"], "temporary copy removed"


def test_apply_patch_refuses_before_copying(checkout: Path, tmp_path: Path) -> None:
    (checkout / "models" / "yolo.py").write_text(_module("return x"), encoding="utf-8")
    with pytest.raises(PatchError, match=r"^patch: Detect\.forward at v9\.9 ends in `return x` \(line \d+\), not a "):
        apply_patch(checkout, tmp_path / "d", "3", "v9.9")
    assert not (tmp_path / "d").exists()
    with pytest.raises(PatchError, match=r"models/yolo\.py missing at v9\.9"):
        apply_patch(tmp_path / "nowhere", tmp_path / "d", "3", "v9.9")


# --- every stand-in tag -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(request: pytest.FixtureRequest) -> git.Repo:
    try:
        path = request.getfixturevalue("mirror_repo")
    except pytest.FixtureLookupError:
        pytest.skip("needs the mirror_repo fixture (tests/conftest.py)")
    repo = git.Repo(path)
    request.addfinalizer(repo.close)
    return repo


def _tag_file(repo: git.Repo, tag: str, path: str) -> str:
    return (repo.commit(tag).tree / path).data_stream.read().decode("utf-8")


def _tag_tree(repo: git.Repo, tag: str, dest: Path) -> Path:
    """The tag's files in a plain directory (git archive: the mirror repo itself is not changed)."""
    buf = io.BytesIO()
    repo.archive(buf, treeish=tag, format="tar")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    return dest


def test_mirror_has_every_tag(mirror: git.Repo) -> None:
    assert set(TAGS) <= {t.name for t in mirror.tags}


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("variant", PATCHED)
def test_tag_patches(mirror: git.Repo, tag: str, variant: str) -> None:
    before = _tag_file(mirror, tag, "models/yolo.py")
    after = patch_source(before, variant, tag)
    _check_patched(before, after, variant)
    assert patch_source(after, variant, tag) == after


@pytest.mark.parametrize("tag", TAGS)
def test_tag_has_p6_cfg(mirror: git.Repo, tag: str) -> None:
    cfg = _tag_file(mirror, tag, P6)
    assert "P6/64" in cfg  # the fourth detection layer: variant "3" has expected_output_count("3", 4) == 4 there


@pytest.mark.parametrize("tag", TAGS)
def test_tag_apply_patch_and_reuse(mirror: git.Repo, tag: str, tmp_path: Path) -> None:
    tree = _tag_tree(mirror, tag, tmp_path / "tree")
    for variant in VARIANTS:
        dest = tmp_path / "patched" / variant
        diff = apply_patch(tree, dest, variant, tag)
        assert (diff == "") == (variant == "native")
        stamp = (dest / STAMP_NAME).stat().st_mtime_ns
        assert apply_patch(tree, dest, variant, tag) == diff
        assert (dest / STAMP_NAME).stat().st_mtime_ns == stamp, "reused, not rebuilt"
        if diff:
            _git_apply_reproduces(tree, dest, diff, tmp_path / f"apply-{variant}")


# --- real import + real forward (needs an env with torch) -------------------------------------------------------------

# Runs inside the env's Python: import the patched tree's models.yolo, build P5 and P6 models, run one forward with
# Detect.export = True (what v5.0 and v6.2+ exporters set; v6.0/v6.1 never read it) and print the output structure.
_FORWARD = r"""
import glob, json, os, shutil, sys, tempfile
trees, cfgs = json.loads(sys.argv[1]), sys.argv[2:]  # {variant: patched tree}: one torch import for all
# v6.0/v6.1 utils.plots loads Arial.ttf from the config dir at import and downloads it when missing: give it any TTF.
cfg_dir = tempfile.mkdtemp()
try:
    import matplotlib
    ttf = sorted(glob.glob(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "*.ttf")))[0]
    shutil.copy(ttf, os.path.join(cfg_dir, "Arial.ttf"))
except (ImportError, IndexError):
    pass
os.environ["YOLOV5_CONFIG_DIR"] = cfg_dir
import torch

def struct(o):
    if isinstance(o, torch.Tensor):
        return list(o.shape)
    return {"type": type(o).__name__, "items": [struct(i) for i in o]}

out = {}
for variant, tree in trees.items():
    # Each variant's tree has its own `models` and `utils` packages: forget the previous tree's before importing.
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
        del sys.modules[name]
    os.chdir(tree)
    sys.path.insert(0, tree)
    from models.yolo import Model
    out[variant] = {}
    for cfg in cfgs:
        torch.manual_seed(0)
        model = Model(cfg, nc=80).eval()
        detect = model.model[-1]
        detect.export = True
        with torch.no_grad():
            y = model(torch.zeros(1, 3, 256, 256))
        stride = [int(s) for s in detect.stride]
        out[variant][cfg] = {"nl": detect.nl, "na": detect.na, "no": detect.no, "stride": stride, "y": struct(y)}
    sys.path.remove(tree)
print(json.dumps(out))
"""


def _flatten(s: object) -> list[list[int]]:
    if isinstance(s, list):
        return [s]
    assert isinstance(s, dict)
    return [shape for item in s["items"] for shape in _flatten(item)]


@pytest.fixture(scope="module")
def torch_python(request: pytest.FixtureRequest) -> Path:
    try:
        return Path(request.getfixturevalue("env_python"))
    except pytest.FixtureLookupError:
        pytest.skip("needs the env_python fixture (tests/conftest.py)")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("tag", TAGS)
def test_tag_real_forward(mirror: git.Repo, torch_python: Path, tag: str, tmp_path: Path) -> None:
    tree = _tag_tree(mirror, tag, tmp_path / "tree")
    source = (tree / "models" / "yolo.py").read_text()
    trees = {}
    for variant in VARIANTS:
        for form in ("guide", "adapted") if adaptation_of(source, variant) else ("guide",):
            trees[f"{variant}/{form}"] = str(tmp_path / f"patched-{variant}-{form}")
            apply_patch(tree, Path(trees[f"{variant}/{form}"]), variant, tag, form)
    proc = subprocess.run(
        [str(torch_python), "-c", _FORWARD, json.dumps(trees), P5, P6],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, cfg, nl_expected in ((k, c, n) for k in trees for c, n in ((P5, 3), (P6, 4))):
        variant, form = key.split("/")
        r = result[key][cfg]
        assert r["nl"] == nl_expected and r["stride"] == [8, 16, 32, 64][:nl_expected]
        raw = [[1, r["na"], 256 // s, 256 // s, r["no"]] for s in r["stride"]]
        decoded = [1, sum(r["na"] * (256 // s) ** 2 for s in r["stride"]), r["no"]]
        shapes = _flatten(r["y"])
        count = expected_output_count(variant, r["nl"])
        if count is None:  # native: recorded, not judged, but it must be one of the known native outputs
            assert shapes in (raw, [decoded], [decoded, *raw]), (tag, cfg, shapes)
            continue
        if form == "guide" and adaptation_of(source, variant) and variant in ("1", "4"):
            # v5.0's `self.training |= self.export`: with the exporter's export=True the guide's edit is never reached.
            assert shapes == raw, (tag, key, shapes)
            continue
        assert len(shapes) == count
        npu = [[1, r["na"] * r["no"], 256 // s, 256 // s] for s in r["stride"]]  # each level's conv output, 4-D
        assert shapes == {"1": [decoded], "3": raw, "4": [decoded, *raw], "npu": npu}[variant]
