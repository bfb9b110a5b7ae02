"""Expected outputs come from the model's Detect layer; the judge reads counts, shapes and parity in that order."""

from __future__ import annotations

from harness.config import Tolerances
from harness.verify.judge import expected_shapes, judge

P5 = {"nl": 3, "na": 3, "no": 85, "nc": 80, "stride": [8.0, 16.0, 32.0]}
P6 = {"nl": 4, "na": 3, "no": 85, "nc": 80, "stride": [8.0, 16.0, 32.0, 64.0]}
TOL = Tolerances(atol=1e-3, rtol=1e-3, min_cosine=0.9999)


def test_p5_shapes_at_640() -> None:
    assert expected_shapes("1", P5, 1, 640) == [[1, 25200, 85]]
    assert expected_shapes("3", P5, 1, 640) == [[1, 3, 80, 80, 85], [1, 3, 40, 40, 85], [1, 3, 20, 20, 85]]
    assert expected_shapes("4", P5, 2, 320) == [[2, 6300, 85], [2, 3, 40, 40, 85], [2, 3, 20, 20, 85],
                                               [2, 3, 10, 10, 85]]
    assert expected_shapes("native", P5, 1, 640) is None


def test_p6_has_four_raw_outputs() -> None:
    raw = expected_shapes("3", P6, 1, 640)
    assert raw is not None and len(raw) == 4 and raw[-1] == [1, 3, 10, 10, 85]
    assert expected_shapes("1", P6, 1, 640) == [[1, 3 * (6400 + 1600 + 400 + 100), 85]]


def _metrics(max_abs: float = 1e-6, exceeding: int = 0, cosine: float = 1.0) -> dict:
    return {"max_abs": max_abs, "max_rel": max_abs, "cosine": cosine, "min_tolerance": max_abs, "finite": True,
            "exceeding": exceeding}


def _answer(shapes: list[list[int]], eager: list[list[int]] | None = None, **metrics: float) -> dict:
    eager = eager or shapes
    return {"detect": P5, "cases": [{
        "name": "main", "input_shape": [1, 3, 640, 640],
        "eager": [{"shape": s} for s in eager],
        "outputs": [{"name": f"o{i}", "shape": s} for i, s in enumerate(shapes)],
        "parity": [_metrics(**metrics) for _ in shapes]}]}


def test_pass() -> None:
    j = judge("1", "onnx", _answer([[1, 25200, 85]]), TOL)
    assert j.status == "pass" and j.parity[0]["pass"]


def test_variant_count_mismatch_fails() -> None:
    j = judge("3", "onnx", _answer([[1, 25200, 85]]), TOL)
    assert j.status == "fail" and "variant 3 expects 3" in j.message


def test_backend_differs_from_eager_fails() -> None:
    j = judge("native", "torchscript", _answer([[1, 25200, 85]], eager=[[1, 25200, 85], [1, 3, 80, 80, 85]]), TOL)
    assert j.status == "fail" and "torchscript gives 1 output(s), eager PyTorch 2" in j.message


def test_parity_beyond_tolerance_fails_and_says_what_would_pass() -> None:
    j = judge("1", "onnx", _answer([[1, 25200, 85]], max_abs=0.5, exceeding=7), TOL)
    assert j.status == "fail" and "min tolerance that passes" in j.message and not j.parity[0]["pass"]


def test_a_case_the_backend_cannot_run_is_a_broken_artifact_at_run() -> None:
    answer = _answer([[1, 25200, 85]])
    answer["cases"].append({"name": "size", "input_shape": [1, 3, 320, 320], "eager": [{"shape": [1, 6300, 85]}],
                            "error": "Fail: broadcast"})
    j = judge("1", "onnx-dynamic", answer, TOL)
    assert (j.status, j.stage) == ("fail", "run") and "size 320" in j.message  # the file is unusable there
