"""The post-processing contract: a reference decode of the raw per-level outputs, checked against the model's own.

The seed guide: "If the model is output 3, sigmoid and predicted coordinates need to be converted in
post-processing." A deployer then writes that decode by hand, with anchors and strides copied from somewhere. This
module is that decode written once, in numpy, from the formula (sigmoid, grid, ``(xy*2 - 0.5 + grid) * stride``,
``(wh*2)**2 * anchor``), fed with the anchors and strides read from the model's own Detect. The check runs it on the
backend's raw outputs (ONNX Runtime, TorchScript) and compares the result with the decoded tensor the ref's own,
*unpatched* ``Detect.forward`` computes in eager PyTorch for the same input: the scores element by element, the
boxes as a deployer keeps them after NMS (torchvision's), level by level. The record it returns is what a deployer
needs to write the decode: anchors in pixels, strides, which output is which level, where the sigmoid goes.

Runs inside env interpreters: Python 3.8, numpy; torch and torchvision are imported by the functions that need them.
"""

import collections
import copy
import os
import re
import types
from typing import Any

import numpy as np

# NMS as YOLOv5's detect.py runs it (--iou-thres 0.45, one class per box), and what "the same boxes" means.
NMS_IOU = 0.45
MATCH_IOU = 0.99  # a kept box matches one of the other side's with this IoU and the same class
PASS_FRACTION = 0.99  # per level: matched / max(kept by eager, kept by the backend)
# NMS sees eager's top TOP_K boxes of each level (its top half when smaller), never a fixed score threshold: the
# harness's random-init checkpoint scores near 1e-5..1e-3 (the bias init), so detect.py's 0.25 would keep no box and
# prove nothing. Per level, because the bias init gives each level its own score band (objectness prior
# 8 / (640 / stride)**2): one global cut keeps whole coarse levels and none of the finest, whose anchors would then
# go unchecked (seen at 160 px: the global top 375 were exactly levels 1 and 2).
TOP_K = 300

# How each known Detect writes its decode: data, read from the real tags (`git show <tag>:models/yolo.py` in a clone
# of the upstream bundle, v1.0 ... v7.0 and master of 2026-08). Matched in order against the unpatched Detect class.
# Found: the formula is the same in every tag; only where the -0.5 offset and the pixel anchors live moves:
# - v1.0-v5.0: `y = x[i].sigmoid()`, `(y[..., 0:2] * 2. - 0.5 + self.grid[i]) * self.stride[i]`, wh times the
#   `anchor_grid` *buffer* (pixels, saved in the checkpoint, separate from `anchors`, which Model.__init__ divides by
#   the stride: anchors are grid units in every tag).
# - v6.0-v6.1: the same formula; anchor_grid is computed as `anchors[i] * stride[i]` in _make_grid.
# - v6.2-master: `_make_grid` subtracts 0.5 from the grid (`grid = ... - 0.5`) and forward writes
#   `(xy * 2 + self.grid[i]) * self.stride[i]`: the same numbers. v7.0+ splits after the sigmoid (`x[i].sigmoid()
#   .split(...)`) for Detect; only Segment leaves its mask coefficients without sigmoid (not decoded here).
# In every tag the raw output x[i] is stored before the sigmoid: raw outputs are logits, so the deployer applies the
# sigmoid to all channels (sigmoid_in_graph False).
Form = collections.namedtuple("Form", "name refs pattern sigmoid_in_graph anchors_in_decode")
FORMS = (
    Form("grid offset in the grid", "v6.2-master", r"grid = .*- 0\.5", False, "anchors * stride (_make_grid)"),
    Form("anchor_grid buffer", "v1.0-v5.0", r"register_buffer\(\s*['\"]anchor_grid['\"]", False,
         "anchor_grid buffer (pixels)"),
    Form("anchor_grid from anchors", "v6.0-v6.1", r"\* 2\.? - 0\.5 \+ self\.grid\[i\]", False,
         "anchors * stride (_make_grid)"),
)
# The formula this module applies, for the record (a deployer's post-processing, in words).
FORMULA = ("y = sigmoid(raw); xy = (y[..., 0:2] * 2 - 0.5 + grid) * stride; wh = (y[..., 2:4] * 2) ** 2 * anchor; "
           "conf = y[..., 4:]; grid[y, x] = (x, y); rows ordered level, anchor, y, x")


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_decode(raw, strides, anchors, sigmoid_in_graph=False):
    """Decode raw per-level outputs [(bs, na, ny, nx, no)] into (bs, sum(na*ny*nx), no), in float64.

    Args:
        raw: one array per detection level, in level order.
        strides: pixels per grid cell, per level.
        anchors: (nl, na, 2) anchor widths and heights in pixels.
        sigmoid_in_graph: the raw outputs already went through the sigmoid.
    """
    out = []
    for level, (t, stride) in enumerate(zip(raw, strides)):
        bs, na, ny, nx, no = t.shape
        y = t.astype(np.float64) if sigmoid_in_graph else sigmoid(t.astype(np.float64))
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.stack((xv, yv), -1).reshape(1, 1, ny, nx, 2)
        anchor = np.asarray(anchors[level], dtype=np.float64).reshape(1, na, 1, 1, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * float(stride)
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        out.append(np.concatenate((xy, wh, y[..., 4:]), -1).reshape(bs, na * ny * nx, no))
    return np.concatenate(out, 1)


def level_outputs(shapes, strides, na, no, size, batch):
    """Which output index holds each level's raw tensor (None when some level has none), and the decoded concat's
    index (or None): found by shape, as a deployer would, since names and order differ between refs and backends.
    A level's raw tensor is Detect's (bs, na, ny, nx, no) or the NPU form's conv output (bs, na*no, ny, nx)."""
    order = []
    for stride in strides:
        grid = size // int(stride)
        wanted = ([batch, na, grid, grid, no], [batch, na * no, grid, grid])
        found = [i for i, shape in enumerate(shapes) if list(shape) in wanted]
        if not found:
            return None, None
        order.append(found[0])
    rows = na * sum((size // int(s)) ** 2 for s in strides)
    decoded = [i for i, shape in enumerate(shapes) if list(shape) == [batch, rows, no]]
    return order, (decoded[0] if decoded else None)


def as_level(raw, na, no):
    """One level's raw output as Detect lays it out, (bs, na, ny, nx, no): the NPU form's (bs, na*no, ny, nx) is
    viewed as (bs, na, no, ny, nx) and permuted (0, 1, 3, 4, 2), the very steps Detect.forward takes after the conv."""
    if raw.ndim == 4:
        bs, _, ny, nx = raw.shape
        return raw.reshape(bs, na, no, ny, nx).transpose(0, 1, 3, 4, 2)
    return raw


# How a deployer turns an NPU-form output into Detect's layout, for the record.
NPU_LAYOUT = "(bs, na*no, ny, nx) -> view (bs, na, no, ny, nx) -> permute (0, 1, 3, 4, 2) -> (bs, na, ny, nx, no)"


def candidates(decoded):
    """Boxes (xyxy), scores (objectness x best class) and classes of image 0 of a decoded (bs, N, no) array, as
    YOLOv5's non_max_suppression forms them (one class per box)."""
    d = np.asarray(decoded, dtype=np.float32)[0]
    xy, wh = d[:, 0:2], d[:, 2:4]
    boxes = np.concatenate((xy - wh / 2, xy + wh / 2), 1)
    if d.shape[1] > 5:
        cls = d[:, 5:] * d[:, 4:5]
        classes = cls.argmax(1)
        scores = cls[np.arange(len(cls)), classes]
    else:  # no class columns: objectness alone
        classes, scores = np.zeros(len(d), dtype=np.int64), d[:, 4]
    return boxes, scores, classes


def nms(boxes, classes, rows, order, groups):
    """torchvision's NMS over the ``rows`` of ``boxes``, visiting them in the order of ``order`` and suppressing
    within ``groups``: (boxes, classes) kept, as torch tensors (numpy arrays where the env has no torchvision, e.g. a
    downstream target's: the same greedy rule, in numpy)."""
    try:
        import torch
        from torchvision.ops import batched_nms
    except ImportError:
        kept = _batched_nms_numpy(boxes[rows], order[rows], groups[rows], NMS_IOU)
        return boxes[rows][kept], classes[rows][kept]

    b, c, o, g = (torch.from_numpy(np.ascontiguousarray(a[rows])) for a in (boxes, classes, order, groups))
    kept = batched_nms(b, o, g.long(), NMS_IOU)
    return b[kept], c[kept]


def box_iou_numpy(a, b):
    """IoU of every box of ``a`` with every box of ``b`` (xyxy), as torchvision's box_iou computes it."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _batched_nms_numpy(boxes, scores, groups, iou):
    """torchvision's batched_nms: visit boxes by descending score, drop those over ``iou`` with a kept box of the
    same group; the kept indices, by descending score."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept = []
    suppressed = np.zeros(len(order), dtype=bool)
    ious = box_iou_numpy(boxes, boxes)
    same = np.asarray(groups).reshape(-1, 1) == np.asarray(groups).reshape(1, -1)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= (ious[i] > iou) & same[i]
    return np.asarray(kept, dtype=np.int64)


def match(a, b, match_iou=MATCH_IOU):
    """Boxes of ``a`` with a box of ``b`` of the same class at IoU >= ``match_iou``, paired one to one (greedy, best
    IoU first)."""
    if not len(a[0]) or not len(b[0]):
        return 0
    try:
        import torch
        from torchvision.ops import box_iou
    except ImportError:  # as in nms: the numpy twin
        iou = box_iou_numpy(a[0], b[0])
        iou[np.asarray(a[1]).reshape(-1, 1) != np.asarray(b[1]).reshape(1, -1)] = 0
        pairs = np.argwhere(iou >= match_iou)
        pairs = pairs[np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")].tolist()
    else:
        iou = box_iou(a[0], b[0])
        iou[a[1].view(-1, 1) != b[1].view(1, -1)] = 0
        pairs = torch.nonzero(iou >= match_iou)
        pairs = pairs[torch.argsort(iou[pairs[:, 0], pairs[:, 1]], descending=True)].tolist()
    used_a, used_b = set(), set()
    for i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(used_a)


def compare_nms(eager, got, rows, match_iou=MATCH_IOU):
    """NMS on both decoded tensors, level by level (``rows``: how many rows each level has, in order), and how many
    kept boxes match. Passes when every level keeps boxes and at least PASS_FRACTION of them match: a comparison that
    keeps nothing proves nothing.

    Eager decides which rows enter NMS (its top TOP_K of the level), the order NMS visits them (its scores) and the
    groups it suppresses within (its classes); each side brings its own boxes and classes. The random-init scores are
    nearly flat (3072 level-0 scores of yolov5s6 at 256 px within 14% of each other, 1e-12 apart at the cut), so the
    backend's own rounding (up to 6e-6 relative, ONNX) would move boxes across any cut and reorder neighbours, and
    NMS turns each such swap into a cascade of other kept boxes (seen: 136 of 177 matched at max |diff| 4e-5 px):
    noise, not decode. The backend's scores are compared element by element instead (see check)."""
    levels, start = [], 0
    for level, count in enumerate(rows):
        e_boxes, e_scores, e_classes = candidates(eager[:, start:start + count])
        g_boxes, _, g_classes = candidates(got[:, start:start + count])
        start += count
        top = max(1, min(TOP_K, count // 2))
        threshold = float(np.sort(e_scores)[::-1][top - 1])
        chosen = (e_scores >= threshold) & (e_scores > 0)
        kept_eager = nms(e_boxes, e_classes, chosen, e_scores, e_classes)
        kept_got = nms(g_boxes, g_classes, chosen, e_scores, e_classes)
        matched = match(kept_eager, kept_got, match_iou)
        most = max(len(kept_eager[0]), len(kept_got[0]))
        levels.append({"level": level, "score_threshold": threshold, "candidates": int(chosen.sum()),
                       "kept_eager": len(kept_eager[0]), "kept_backend": len(kept_got[0]), "matched": matched,
                       "matched_fraction": matched / most if most else 0.0})
    total = {key: sum(level[key] for level in levels) for key in ("kept_eager", "kept_backend", "matched")}
    return dict(total, iou=NMS_IOU, match_iou=match_iou, pass_fraction=PASS_FRACTION, top_k=TOP_K,
                matched_fraction=min((level["matched_fraction"] for level in levels), default=0.0),
                levels=levels,
                **{"pass": bool(levels) and all(level["kept_eager"] and level["matched_fraction"] >= PASS_FRACTION
                                                for level in levels)})


# -- the model's own decode ---------------------------------------------------------------------------------------


def reverse_patch(patched, diff):
    """The text before ``diff`` (a unified diff as harness/patch/detect.py writes it) was applied to give
    ``patched``."""
    lines = patched.splitlines(True)
    body = diff.splitlines(True)
    out, pos, k = [], 0, 0
    while k < len(body):
        m = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", body[k])
        k += 1
        if not m:
            continue
        start = int(m.group(1)) - (1 if m.group(2) != "0" else 0)
        out.extend(lines[pos:start])
        pos = start
        while k < len(body) and not body[k].startswith("@@"):
            tag, text = body[k][:1], body[k][1:]
            k += 1
            if tag == "-":
                out.append(text)
            elif tag in (" ", "+"):
                if pos >= len(lines) or lines[pos].rstrip("\r\n") != text.rstrip("\r\n"):
                    raise ValueError(f"patch.diff does not match models/yolo.py at line {pos + 1}")
                if tag == " ":
                    out.append(lines[pos])
                pos += 1
    out.extend(lines[pos:])
    return "".join(out)


_ORIGINALS: "dict[str, Any]" = {}


def original_yolo(tree):
    """The ref's unpatched models/yolo.py as a module of its own (a patched tree keeps its patch as patch.diff; a
    tree without one is unpatched), plus the text of its Detect class."""
    if tree not in _ORIGINALS:
        path = os.path.join(tree, "models", "yolo.py")
        with open(path) as fh:
            source = fh.read()
        diff_path = os.path.join(tree, "patch.diff")
        if os.path.isfile(diff_path):
            with open(diff_path) as fh:
                source = reverse_patch(source, fh.read())
        module = types.ModuleType("_export_matrix_original_yolo")
        module.__file__ = path
        # The ref's own code, from the tree the worker already imports; its imports resolve to the loaded modules.
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102
        found = re.search(r"^class Detect\b.*?(?=^class |\Z)", source, re.MULTILINE | re.DOTALL)
        _ORIGINALS[tree] = module, found.group(0) if found else ""
    return _ORIGINALS[tree]


def form_of(detect_source):
    """The row of FORMS that the unpatched Detect class's text matches (None for a Detect no row knows: the check
    still runs, with the raw outputs taken as logits, and says so in the record)."""
    for form in FORMS:
        if re.search(form.pattern, detect_source):
            return form
    return None


def own_decode(tree, head, inputs):
    """The decoded tensor the ref's unpatched Detect.forward computes from ``inputs`` (Detect's inputs captured in
    the eager run), on a copy of the eager model's Detect in inference mode with export off, and that forward's raw
    outputs: numpy (decoded, [raw per level])."""
    import torch

    module, _ = original_yolo(tree)
    twin = copy.deepcopy(head)
    twin.eval()
    for attr in ("export", "onnx_dynamic", "dynamic"):
        if hasattr(twin, attr):
            setattr(twin, attr, False)
    with torch.no_grad():
        out = module.Detect.forward(twin, [t.clone() for t in inputs])
    if not isinstance(out, (tuple, list)) or len(out) < 2 or not isinstance(out[1], (tuple, list)):
        raise ValueError(f"the unpatched Detect.forward returned {type(out).__name__}, not (decoded, raw)")
    return out[0].detach().cpu().numpy(), [t.detach().cpu().numpy() for t in out[1]]


def detect_constants(head):
    """Strides and pixel anchors as the model's own Detect stores them: ``anchors`` is in grid units in every tag
    (Model.__init__ divides it by the stride), so pixels are anchors x stride."""
    strides = [float(s) for s in head.stride.tolist()]
    anchors = (head.anchors.detach().cpu().double() * head.stride.detach().cpu().double().view(-1, 1, 1)).tolist()
    return strides, anchors


def check(tree, head, model_decode, outputs, names, size, atol, rtol):
    """The decode record of one cell: decode the backend's raw per-level ``outputs`` with the reference decoder and
    the Detect's constants, compare with the model's own decode (scores element-wise, boxes after NMS). None when the
    outputs hold no raw tensor for every level (variant 1, v6.2+ native).

    ``model_decode()`` gives :func:`own_decode` for the same input (called only when there is something to check; the
    formats of one input share it)."""
    from harness.worker.compare import min_tolerance

    if type(head).__name__ != "Detect":  # Segment heads decode masks too; not part of this contract
        return None
    strides, anchors = detect_constants(head)
    batch = int(outputs[0].shape[0]) if outputs and outputs[0].ndim else 1
    order, decoded_index = level_outputs([o.shape for o in outputs], strides, int(head.na), int(head.no), size, batch)
    if order is None:
        return None
    _, detect_source = original_yolo(tree)
    form = form_of(detect_source)
    in_graph = form.sigmoid_in_graph if form else False
    raw = [as_level(outputs[i], int(head.na), int(head.no)) for i in order]
    eager, eager_raw = model_decode()
    got = reference_decode(raw, strides, anchors, in_graph)
    # The reference decode of eager's own raw outputs: a difference here is the formula or the constants, not the
    # export.
    own = reference_decode(eager_raw, strides, anchors, in_graph)
    record = {
        "formula": FORMULA, "form": form.name if form else None, "form_refs": form.refs if form else None,
        "anchors_in_model_decode": form.anchors_in_decode if form else None,
        "sigmoid_in_graph": in_graph, "strides": strides, "anchors": anchors,
        "output_order": [{"level": level, "output": index, "name": names[index] if names else None,
                          "stride": strides[level], "shape": list(outputs[index].shape),
                          "layout": NPU_LAYOUT if outputs[index].ndim == 4 else "(bs, na, ny, nx, no)"}
                         for level, index in enumerate(order)],
        "decoded_output": decoded_index,
        "raw_range": [float(min(r.min() for r in raw)), float(max(r.max() for r in raw))],
    }
    if got.shape != eager.shape:
        record.update(max_abs=None, nms=None, ok=False,
                      message=f"decode check: the reference decode gives {list(got.shape)}, the model's own decode "
                              f"{list(eager.shape)}: it does not give the model's boxes")
        return record
    eager64 = eager.astype(np.float64)
    diff = np.abs(got - eager64)
    # Scores (objectness, classes: sigmoid only) are held to the parity rule; boxes (pixels, up to the export size)
    # are judged after NMS, where a deployer sees them.
    conf = diff[..., 4:]
    record.update(max_abs=float(diff.max()), min_tolerance=min_tolerance(eager, got),
                  max_abs_eager_raw=float(np.abs(own - eager64).max()), finite=bool(np.isfinite(got).all()),
                  scores_max_abs=float(conf.max()),
                  scores_exceeding=int(np.count_nonzero(conf > atol + rtol * np.abs(eager64[..., 4:]))))
    nms = record["nms"] = compare_nms(eager, got, [r.shape[1] * r.shape[2] * r.shape[3] for r in raw])
    record["ok"] = bool(record["finite"] and nms["pass"] and not record["scores_exceeding"])
    if record["ok"]:
        record["message"] = (f"decode check: {nms['matched']} of {nms['kept_eager']} boxes kept after NMS match, "
                             f"every level (max abs {record['max_abs']:.3g} px)")
        return record
    record["message"] = _failure(record, float(np.abs(eager64).max()), atol, rtol)
    return record


def _failure(record, eager_max, atol, rtol):
    """The message of a failed decode check: which levels, scores or values fail, and where the difference is."""
    strides, anchors, nms = record["strides"], record["anchors"], record["nms"]
    # Where it goes wrong: decoding eager's own raw outputs isolates the formula and constants from the export.
    formula_off = record["max_abs_eager_raw"] > atol + rtol * eager_max
    where = (f"the formula or Detect's constants (eager's own raw outputs decode wrong too, max abs "
             f"{record['max_abs_eager_raw']:.3g})" if formula_off else "the backend's raw outputs")
    failing = [f"level {lv['level']} (stride {_short(strides[lv['level']])}): "
               + (f"{lv['matched']} of {max(lv['kept_eager'], lv['kept_backend'])} kept boxes match"
                  if lv["kept_eager"] or lv["kept_backend"] else "NMS kept no box")
               for lv in nms["levels"] if not (lv["kept_eager"] and lv["matched_fraction"] >= PASS_FRACTION)]
    if not record["finite"]:
        failing.append("non-finite values")
    if record["scores_exceeding"]:
        failing.append(f"{record['scores_exceeding']} scores beyond atol {atol:g} / rtol {rtol:g} (max abs "
                       f"{record['scores_max_abs']:.3g})")
    return (f"decode check: the raw outputs decoded with anchors {_short(anchors)} px and strides "
            f"{_short(strides)} do not give the model's boxes: {', '.join(failing)} (boxes match at "
            f"IoU >= {MATCH_IOU} and the same class; {PASS_FRACTION} needed), max abs "
            f"{record['max_abs']:.3g} px; the difference is in {where}")


def _short(values):
    """Nested pixel values as written in a yaml: 10 rather than 10.0, two decimals otherwise."""
    if isinstance(values, (list, tuple)):
        return [_short(v) for v in values]
    return int(values) if float(values).is_integer() else round(float(values), 2)
