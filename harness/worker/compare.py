"""Numeric comparison of two output lists (Polygraphy's comparator idea: no backend imports here, only numpy)."""

import numpy as np


def min_tolerance(ref, got):
    """Smallest t with |got - ref| <= t + t * |ref| everywhere: the one number that, used as atol and rtol, passes."""
    ref = ref.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - ref)
    return float(np.max(diff / (1.0 + np.abs(ref)))) if diff.size else 0.0


def compare_pair(ref, got, atol, rtol):
    """Metrics for one output: shapes, max abs and rel difference, cosine similarity, minimum passing tolerance,
    and how many elements break |got - ref| <= atol + rtol * |ref| (numpy.allclose's rule)."""
    entry: dict[str, object] = {"ref_shape": list(ref.shape), "shape": list(got.shape)}
    if ref.shape != got.shape:
        entry["error"] = "shape mismatch"
        return entry
    a = ref.astype(np.float64).ravel()
    b = got.astype(np.float64).ravel()
    diff = np.abs(a - b)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    entry.update(
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float((diff / np.maximum(np.abs(a), 1e-12)).max()) if diff.size else 0.0,
        cosine=float(np.dot(a, b) / norm) if norm > 0 else (1.0 if not diff.any() else 0.0),
        min_tolerance=min_tolerance(ref, got),
        finite=bool(np.isfinite(b).all()),
        exceeding=int(np.count_nonzero(diff > atol + rtol * np.abs(a))),
    )
    return entry


def compare_outputs(refs, gots, atol, rtol):
    """Pairs outputs by position (names differ across backends: torch has none, ONNX output0/clone_1/...)."""
    return [compare_pair(r, g, atol, rtol) for r, g in zip(refs, gots)]
