"""The Detect.forward rewrite that gives a ref 1, 3 or 4 outputs, and the patched copy of a checkout.

Deployment guides (e.g. Sophgo's YOLOv5 export guide) tell users to edit the final ``return`` of ``Detect.forward`` in
models/yolo.py. Every YOLOv5 release writes that return differently, and some releases also have other lines that
switch the output when the exporter sets ``Detect.export``. What each release looks like is data (``_SHAPES``); the
mechanism below only locates the return with ``ast``, looks its shape up and swaps the exact source lines, so an
unknown release is refused instead of being patched blindly.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.axes import VARIANTS
from harness.errors import PatchError, UnknownShapeError

# Where the patched file lives inside a checkout; also the a/ b/ paths of patch.diff.
YOLO_PY = "models/yolo.py"
DIFF_NAME = "patch.diff"
# Written last into a patched copy: its presence means the copy is complete and says which patch it holds.
STAMP_NAME = ".export-matrix-patch.json"
# Comment appended to every line the patcher writes: makes patched files recognisable (idempotence) and greppable.
_TAG = "yolov5-export-matrix: variant="
_TAG_RE = re.compile(re.escape(_TAG) + r"(\S+)")
# Never copied into a patched tree: git metadata is large and useless there, bytecode is stale by definition.
_SKIP = (".git", "__pycache__")

# CPython 3.11's parser is not thread-safe ("SystemError: AST constructor recursion depth mismatch", seen with two
# batches patching at once): every parse and compile here takes this lock.
_AST_LOCK = threading.Lock()


def _parse(source: str) -> ast.Module:
    with _AST_LOCK:
        return ast.parse(source)


# Changes whenever this module (and so its table) changes, so cached patched copies are rebuilt after an upgrade.
PATCH_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


# The seed guide's lines (Sophgo's YOLOv5 export guide), as it prints them: a user edits the last `return` of
# Detect.forward to one of these. They are every variant's out-of-the-box form.
GUIDE_RETURNS: Mapping[str, str] = {
    "1": "x if self.training else (torch.cat(z, 1))",
    "3": "x if self.training else x",
    "4": "x if self.training else (torch.cat(z, 1), x)",
}
# The NPU form (variant "npu"): not an edit of the return but a first statement of Detect.forward that returns each
# level's convolution output before the view/permute to 5-D, as Rockchip's rknn_model_zoo export of YOLOv5 does
# (its Detect returns `self.m[i](x[i])` per level when exporting). A tuple, not a list: v6.2+ export.py reads its
# dry run's `.shape` on anything that is not a tuple. First, so no switch of the ref (v3.1-v5.0's
# `self.training |= self.export`) runs before it; the training branch (Model.__init__'s stride probe, the loss) is
# untouched.
NPU_STATEMENT = "if not self.training: return tuple(self.m[i](x[i]) for i in range(self.nl))"
# "guide": the guide's line as written; "adapted": the row's adaptation, where the ref needs one (a workaround,
# harness/verify/causes.py, tried when the guide's line fails).
FORMS: tuple[str, ...] = ("guide", "adapted")


@dataclass(frozen=True)
class _Adaptation:
    """How the harness's form of a variant differs from the guide's line on one code shape, and why."""

    why: str
    returns: str | None = None  # the return expression instead of the guide's; None keeps the guide's
    neutralise: bool = False  # the row's export switches become `pass`


@dataclass(frozen=True)
class _Shape:
    """One known way a release writes the end of Detect.forward.

    Attributes:
        returns_now: ``ast.unparse`` of the last top-level ``return`` statement (formatting and comments ignored).
        export_switches: ``ast.unparse`` of every other statement in forward that reads ``self.export``, in source
            order. They are part of the key: a forward with an export switch the row does not know is refused.
        adapted: Per variant, what the harness changes when the guide's line fails on this shape. The training
            branch stays ``x`` everywhere because ``Model.__init__`` runs a training-mode forward to compute strides,
            and the loss needs the raw list.
    """

    returns_now: str
    export_switches: tuple[str, ...]
    adapted: Mapping[str, _Adaptation] = field(default_factory=dict)


# v3.1-v5.0: `self.training |= self.export` at the top of forward, and models/export.py sets
# `model.model[-1].export = not opt.grid`, so with the exporter's default every edit of the return is dead code: the
# raw list x comes out whatever the line says. The guide's variant 3 is raw anyway; variants 1 and 4 need the decoded z,
# so their adapted form neutralises that line (passing --grid to the script would do the same).
_EXPORT_SWITCH = _Adaptation("`self.training |= self.export` makes the exporter's export=True skip the edited "
                             "return: that line becomes pass", neutralise=True)

_SHAPES: tuple[_Shape, ...] = (
    # v3.1, v4.0, v5.0 upstream and PyPI yolov5 5.0.x. Found by reading yolo.py + models/export.py and replaying its
    # steps (export flag, two dry runs, jit.trace, onnx.export) on every variant, P5 and P6.
    _Shape(
        returns_now="return x if self.training else (torch.cat(z, 1), x)",
        export_switches=("self.training |= self.export",),
        adapted={"1": _EXPORT_SWITCH, "4": _EXPORT_SWITCH},
    ),
    # v6.0 and v6.1 (upstream; stand-ins PyPI 6.0.6 and 6.0.7): Detect has no export flag; export.py sets
    # inplace/onnx_dynamic and reads its dry run as `tuple(y[0].shape)` (a list passes), so a native export is the
    # 2-tuple (cat, x) and the guide's lines work as written. Found by reading yolo.py + export.py and running
    # export.py (onnx, onnx --dynamic, torchscript) on every variant.
    _Shape(
        returns_now="return x if self.training else (torch.cat(z, 1), x)",
        export_switches=(),
    ),
    # v6.2, v7.0 and master (upstream; stand-ins PyPI 6.1.9 and 7.0.0): export.py sets `m.export = True` (a native
    # export is the 1-tuple (cat,)) and reads its dry run as `tuple((y[0] if isinstance(y, tuple) else y).shape)`
    # (upstream v6.2+, PyPI 6.2.3+) or `tuple(y[0].shape)` (PyPI 6.1.9). The guide's list `x` for variant 3 makes the
    # former call list.shape and abort the whole export (AttributeError), so its adapted form returns `tuple(x)`:
    # same tensors, same exported outputs. Variant 1's bare tensor passes (6.1.9 then logs "output shape (25200, 85)",
    # y[0] being batch row 0: cosmetic). Found by reading yolo.py + export.py and running export.py (onnx, onnx
    # --dynamic, torchscript) on every variant. `class Segment(Detect)` (6.2+) has its own forward, which is not
    # touched; it calls Detect.forward and indexes the result as (cat, x), so a patched variant only makes sense for
    # detection cfgs, not *-seg.yaml.
    _Shape(
        returns_now="return x if self.training else (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)",
        export_switches=(),
        adapted={"3": _Adaptation("the exporter reads its dry run's .shape, which the guide's list x has not: the "
                                  "raw levels are returned as tuple(x)", returns="x if self.training else tuple(x)")},
    ),
)


def expected_output_count(variant: str, nl: int) -> int | None:
    """How many output tensors an exported model of ``variant`` must have.

    Args:
        variant: One of ``VARIANTS``.
        nl: Number of detection layers (3 for P5 configs such as yolov5s.yaml, 4 for P6 such as yolov5s6.yaml).

    Returns:
        None for ``native`` (whatever the ref does is recorded, not judged); 1 for the decoded concat; ``nl`` for the
        raw per-level tensors; ``1 + nl`` for both.
    """
    _check_variant(variant)
    return {"native": None, "1": 1, "3": nl, "4": 1 + nl, "npu": nl}[variant]


def patch_source(source: str, variant: str, ref: str, form: str = "guide") -> str:
    """Return models/yolo.py text whose ``Detect.forward`` ends as ``variant`` in ``form``.

    ``form="guide"`` writes the seed guide's line exactly as printed (``GUIDE_RETURNS``); ``form="adapted"`` applies
    the table row's adaptation for the variant (a return of its own, export switches neutralised). Only the lines of
    the last top-level ``return`` of ``Detect.forward`` and, when adapting, the row's export switches are replaced
    (indentation and line endings kept, everything else byte-identical). Patching an already patched text for the
    same variant and form returns it unchanged.

    Args:
        source: Text of the ref's models/yolo.py.
        variant: One of ``VARIANTS``; ``native`` returns ``source`` unchanged without inspecting it.
        ref: The ref being patched, only used in error messages.
        form: One of ``FORMS``.

    Raises:
        UnknownShapeError: no ``class Detect`` / ``forward`` / ``return``, or a forward no table row recognises.
        PatchError: unknown variant or form; no adapted form of the variant on this shape; a text already patched
            for another variant or form.
    """
    _check_variant(variant)
    if form not in FORMS:
        raise PatchError(f"patch: unknown form {form!r}; use one of {', '.join(FORMS)}")
    if variant == "native":
        return source
    if variant == "npu":
        return _patch_npu(source, ref, form)
    refused = UnknownShapeError(f"patch: Detect.forward return not recognised at {ref}")
    forward, ret = _locate(source, ref)
    lines = source.splitlines(keepends=True)
    label = f"{variant}" if form == "guide" else f"{variant}+{form}"
    if _already_patched(lines, forward, label, ref):
        return source
    switches = list(_export_switches(forward, ret))
    shape = _shape_of(ret, switches, ref, form)
    adaptation = shape.adapted.get(variant) if form == "adapted" else None
    if form == "adapted" and adaptation is None:
        raise PatchError(f"patch: no adapted form of variant {variant} at {ref}: the guide's line is the only one "
                         f"for this Detect.forward")
    # (statement, replacement statement) pairs, applied bottom-up so earlier line numbers stay valid.
    edits: list[tuple[ast.stmt, str]] = [(ret, f"return {intended_return(shape, variant, form)}")]
    if adaptation and adaptation.neutralise:
        edits += [(s, "pass") for s in switches]
    for stmt, new in sorted(edits, key=lambda e: e[0].lineno, reverse=True):
        _replace_lines(lines, stmt, new, f"{_TAG}{label} (was: {ast.unparse(stmt).splitlines()[0]})", refused)
    patched = "".join(lines)
    _verify(patched, intended_return(shape, variant, form), variant, ref)
    return patched


def _patch_npu(source: str, ref: str, form: str) -> str:
    """Insert NPU_STATEMENT as the first statement of Detect.forward (after a docstring), at its indentation."""
    if form != "guide":
        raise PatchError(f"patch: no adapted form of variant npu at {ref}: its one statement is the only form")
    forward, _ = _locate(source, ref)
    lines = source.splitlines(keepends=True)
    if _already_patched(lines, forward, "npu", ref):
        return source
    body = forward.body
    first = body[1] if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        else body[0]
    at = first.lineno - 1
    indent = lines[at][: _char_offset(lines[at], first.col_offset)]
    if indent.strip():
        raise UnknownShapeError(f"patch: Detect.forward at {ref} starts with a statement sharing its line "
                                f"(line {first.lineno}): no line to insert the NPU form before")
    ending = lines[at][len(lines[at].rstrip("\r\n")) :] or "\n"
    lines.insert(at, f"{indent}{NPU_STATEMENT}  # {_TAG}npu (returns each level's conv output){ending}")
    patched = "".join(lines)
    start = _patched_forward(patched, ref)
    statements = [ast.unparse(s) for s in start.body[:2]] if start else []
    if ast.unparse(_parse(NPU_STATEMENT).body[0]) not in statements:
        raise PatchError(f"patch: patched Detect.forward does not start with the NPU form at {ref}; report this bug")
    return patched


def _already_patched(lines: list[str], forward: ast.FunctionDef, label: str, ref: str) -> bool:
    """True when Detect.forward carries this patch's tag already (patching is idempotent); a PatchError when it
    carries another's."""
    done = {m.group(1) for m in _TAG_RE.finditer("".join(lines[forward.lineno - 1 : forward.end_lineno]))}
    if done and done != {label}:
        raise PatchError(f"patch: models/yolo.py at {ref} is already patched for variant {', '.join(sorted(done))}; "
                         "patch a clean checkout")
    return bool(done)


def intended_return(shape: _Shape, variant: str, form: str) -> str:
    adaptation = shape.adapted.get(variant) if form == "adapted" else None
    return adaptation.returns if adaptation and adaptation.returns else GUIDE_RETURNS[variant]


def adaptation_of(source: str, variant: str) -> str | None:
    """Why and how the harness adapts the guide's line of ``variant`` on this models/yolo.py, or None when the
    guide's line is the only form (or the forward is not one the table knows)."""
    try:
        forward, ret = _locate(source, "")
        shape = _shape_of(ret, list(_export_switches(forward, ret)), "", "adapted")
    except UnknownShapeError:
        return None
    adaptation = shape.adapted.get(variant)
    return adaptation.why if adaptation else None


def _locate(source: str, ref: str) -> tuple[ast.FunctionDef, ast.Return]:
    """Detect.forward and its last top-level return; an UnknownShapeError naming the one that is missing."""
    try:
        tree = _parse(source)
    except SyntaxError as e:
        raise UnknownShapeError(f"patch: {YOLO_PY} at {ref} does not parse ({e.msg}, line {e.lineno})") from e
    forward = _detect_forward(tree)
    if forward is None:
        raise UnknownShapeError(f"patch: no `def forward` in a module-level `class Detect` of {YOLO_PY} at {ref} "
                                f"(expected the guide's edit point: the last `return` of Detect.forward)")
    ret = next((s for s in reversed(forward.body) if isinstance(s, ast.Return)), None)
    if ret is None:
        raise UnknownShapeError(f"patch: Detect.forward at {ref} has no top-level `return` (expected one such as "
                                f"`{_SHAPES[0].returns_now}` as its last statement)")
    return forward, ret


def _shape_of(ret: ast.Return, switches: list[ast.stmt], ref: str, form: str) -> _Shape:
    """The row of this forward. The guide's form needs only its return to be one the table knows (a fork's own
    flags, early `continue`s and other statements stay as they are: the guide edits the return alone); the adapted
    form also needs the row's export switches, since it rewrites them."""
    found, found_switches = ast.unparse(ret), tuple(ast.unparse(s) for s in switches)
    same_return = [s for s in _SHAPES if s.returns_now == found]
    if not same_return:
        expected = " or ".join(sorted({f"`{s.returns_now}`" for s in _SHAPES}))
        raise UnknownShapeError(f"patch: Detect.forward at {ref} ends in `{found}` (line {ret.lineno}), not a return "
                                f"the guide's edit applies to (expected {expected})")
    shape = next((s for s in same_return if s.export_switches == found_switches), None)
    if shape is not None:
        return shape
    if form == "guide":
        return same_return[0]  # the guide's line does not depend on the row
    expected = " or ".join(f"[{', '.join(f'`{x}`' for x in s.export_switches) or 'none'}]" for s in same_return)
    raise UnknownShapeError(f"patch: Detect.forward at {ref} reads self.export in "
                            f"[{', '.join(f'`{x.splitlines()[0]}`' for x in found_switches) or 'none'}], not in the "
                            f"statements the "
                            f"adapted form rewrites (expected {expected})")


def apply_patch(checkout: Path, dest: Path, variant: str, ref: str, form: str = "guide") -> str:
    """Make ``dest`` a copy of ``checkout`` whose models/yolo.py is patched for ``variant``, reusing a matching copy.

    The copy is built in a temporary sibling directory and moved into place with its stamp written last, so a crash
    never leaves a half-built ``dest`` that looks reusable. The stamp hashes the patch version, the variant and the
    whole source tree: hashing only yolo.py is not enough, since different refs can ship byte-identical yolo.py
    (PyPI yolov5 6.2.3 and 7.0.0 do) while their exporters differ.

    Args:
        checkout: A YOLOv5 source tree (``.git`` and ``__pycache__`` are not copied).
        dest: Where the patched copy goes; replaced if it holds a different patch, refused if it is something else.
        variant: One of ``VARIANTS``.
        ref: The ref being patched, for error messages and the stamp.
        form: One of ``FORMS`` (see patch_source).

    Returns:
        The unified diff (a/models/yolo.py, b/models/yolo.py) that was applied, also written to ``dest/patch.diff``;
        empty for ``native``.

    Raises:
        PatchError: models/yolo.py missing, the patch does not apply (see ``patch_source``), or ``dest`` exists and
            is not a patched copy.
    """
    checkout, dest = Path(checkout), Path(dest)
    yolo = checkout / YOLO_PY
    if not yolo.is_file():
        raise PatchError(f"patch: {YOLO_PY} missing at {ref} ({checkout}); point the patcher at a YOLOv5 checkout")
    source = yolo.read_text(encoding="utf-8")
    patched = patch_source(source, variant, ref, form)
    diff = "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True), patched.splitlines(keepends=True), f"a/{YOLO_PY}", f"b/{YOLO_PY}"
        )
    )
    stamp = {"key": _stamp_key(checkout, source, f"{variant}/{form}"), "variant": variant, "form": form, "ref": ref,
             "patch": PATCH_VERSION}
    if _stamp_of(dest) == stamp["key"]:
        return (dest / DIFF_NAME).read_text(encoding="utf-8")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(checkout, tmp, symlinks=True, ignore=shutil.ignore_patterns(*_SKIP), dirs_exist_ok=True)
        (tmp / YOLO_PY).write_text(patched, encoding="utf-8", newline="")
        (tmp / DIFF_NAME).write_text(diff, encoding="utf-8", newline="")
        (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
        if _stamp_of(dest) == stamp["key"]:  # another process finished the same copy meanwhile
            shutil.rmtree(tmp)
            return (dest / DIFF_NAME).read_text(encoding="utf-8")
        _remove_old_copy(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return diff


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise PatchError(f"patch: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")


def _detect_forward(tree: ast.Module) -> ast.FunctionDef | None:
    """The ``forward`` defined directly in the module-level ``class Detect`` (not Segment, IDetect, ...)."""
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Detect"), None)
    if cls is None:
        return None
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)


def _export_switches(forward: ast.FunctionDef, ret: ast.Return) -> Iterator[ast.stmt]:
    """Innermost statements of ``forward`` (other than ``ret``) that read ``self.export``, in source order."""
    found: dict[int, ast.stmt] = {}

    def visit(stmt: ast.stmt) -> None:
        inner = [c for c in ast.iter_child_nodes(stmt) if isinstance(c, ast.stmt)]
        for child in inner:
            visit(child)
        own = [c for c in ast.iter_child_nodes(stmt) if not isinstance(c, ast.stmt)]
        if any(_reads_self_export(node) for node in own):
            found[id(stmt)] = stmt

    for stmt in forward.body:
        if stmt is not ret:
            visit(stmt)
    yield from sorted(found.values(), key=lambda s: (s.lineno, s.col_offset))


def _reads_self_export(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Attribute) and n.attr == "export" and isinstance(n.value, ast.Name) and n.value.id == "self"
        for n in ast.walk(node)
    )


def _replace_lines(lines: list[str], stmt: ast.stmt, new: str, comment: str, refused: UnknownShapeError) -> None:
    """Replace the source lines of ``stmt`` by ``new`` at the same indentation, refusing statements sharing a line."""
    first, last = stmt.lineno - 1, (stmt.end_lineno or stmt.lineno) - 1
    head = lines[first][: _char_offset(lines[first], stmt.col_offset)]
    tail = lines[last][_char_offset(lines[last], stmt.end_col_offset) :]
    if head.strip() or (tail.strip() and not tail.lstrip().startswith("#")):
        raise refused  # e.g. `y = 1; return x`: not a line we can swap without touching its neighbour
    ending = lines[last][len(lines[last].rstrip("\r\n")) :] or "\n"
    lines[first : last + 1] = [f"{head}{new}  # {comment}{ending}"]


def _char_offset(line: str, byte_offset: int | None) -> int:
    """ast column offsets count UTF-8 bytes; convert one to a str index."""
    return len(line.encode("utf-8")[: byte_offset or 0].decode("utf-8", errors="ignore"))


def _patched_forward(patched: str, ref: str) -> ast.FunctionDef | None:
    """The patched text's Detect.forward, once the whole text compiles (a patcher bug otherwise)."""
    try:
        with _AST_LOCK:
            compile(patched, YOLO_PY, "exec")
        return _detect_forward(_parse(patched))
    except SyntaxError as e:
        raise PatchError(f"patch: patched {YOLO_PY} does not compile at {ref} ({e}); report this patcher bug") from e


def _verify(patched: str, intended: str, variant: str, ref: str) -> None:
    """Re-parse the result: it must compile and its Detect.forward must now end in the intended return."""
    forward = _patched_forward(patched, ref)
    ret = next((s for s in reversed(forward.body) if isinstance(s, ast.Return)), None) if forward else None
    if ret is None or ast.unparse(ret) != ast.unparse(_parse(f"return {intended}").body[0]):
        raise PatchError(f"patch: patched Detect.forward does not end as variant {variant} at {ref}; report this bug")


def _stamp_key(checkout: Path, source: str, variant: str) -> str:
    h = hashlib.sha256()
    for part in (PATCH_VERSION, variant, source):
        h.update(part.encode("utf-8") + b"\0")
    for path in sorted(_tree_files(checkout)):
        h.update(path.relative_to(checkout).as_posix().encode("utf-8") + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest() if not path.is_symlink() else os.readlink(path).encode())
    return h.hexdigest()


def _tree_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP]
        for name in filenames:
            yield Path(dirpath) / name


def _stamp_of(dest: Path) -> str | None:
    """The stamp key of a complete patched copy at ``dest``, or None when there is none (or it is unreadable)."""
    try:
        key = json.loads((dest / STAMP_NAME).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) and (dest / DIFF_NAME).is_file() else None


def _remove_old_copy(dest: Path) -> None:
    """Clear ``dest`` for a new copy, but only if it is one of ours (stamped) or empty: never delete user data."""
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_dir() and not dest.is_symlink() and (dest / STAMP_NAME).is_file():
        shutil.rmtree(dest)
    elif dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
        dest.rmdir()
    else:
        raise PatchError(f"patch: {dest} exists and is not a patched copy; remove it or choose another destination")
