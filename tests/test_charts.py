"""The report's chart geometry (harness/report/charts.py), without a browser: axes, marks, stacked bars, the output
signature diff. The browser test in test_report.py checks the same charts drawn."""

from __future__ import annotations

import math

import pytest

from harness.report import charts
from harness.report.charts import LogScale, ParityPoint


def test_log_scale_maps_decades_evenly_and_clamps() -> None:
    scale = LogScale(-6, -2, 100, 500)  # 4 decades over 400 px
    assert scale(1e-6) == 100 and scale(1e-2) == 500
    assert scale(1e-4) == pytest.approx(300) and scale(1e-5) == pytest.approx(200)
    assert scale(1e-9) == 100 and scale(5.0) == 500  # outside the domain: at the edge, never off the plot
    assert scale(0.0) == 100  # bit-identical: at the floor
    assert [t.label for t in scale.ticks()] == ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2"]
    assert [t.pos for t in scale.ticks()] == pytest.approx([100, 200, 300, 400, 500])
    assert len(LogScale(-30, 0, 0, 100).ticks()) <= 11  # thinned


def test_log_domain_covers_values_and_limits() -> None:
    assert charts.log_domain([3e-7, 2e-5], [1e-3]) == (-7, -3)
    assert charts.log_domain([0.04], [1e-3]) == (-3, -1)
    assert charts.log_domain([1e-3], []) == (-3, -2)  # at least one decade
    assert charts.log_domain([0.0, 1e-20], [1e-3])[0] == charts.FLOOR_DECADE
    assert charts.log_domain([], []) == (charts.FLOOR_DECADE, 0)


@pytest.mark.parametrize(("high", "expected"), [
    (557.9, [0, 200, 400, 600]), (1.0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0.0, [0, 1]), (41, [0, 10, 20, 30, 40, 50]),
    (100, [0, 20, 40, 60, 80, 100])])
def test_nice_ticks(high: float, expected: list[float]) -> None:
    assert charts.nice_ticks(high) == pytest.approx(expected)


@pytest.mark.parametrize(("value", "text"), [(1e-3, "1e-3"), (2.5e-5, "2.5e-5"), (0.01, "1e-2"), (0.5, "0.5"),
                                             (9.99e-4, "1e-3"), (0.0, "0"), (12.0, "12")])
def test_sci(value: float, text: str) -> None:
    assert charts.sci(value) == text


def test_judge_against_atol_and_rtol() -> None:
    assert charts.judge(1e-4, (1e-3, 1e-3)) == "within"
    assert charts.judge(1e-3, (1e-3, 1e-3)) == "within"  # the boundary passes (<=)
    assert charts.judge(2e-3, (1e-3, 1e-3)) == "over"
    assert charts.judge(2e-3, (1e-4, 1e-2)) == "between"  # passes or not depending on |eager| there
    assert charts.judge(2e-3, None) == "unknown"


def _point(cell: str, row: str, value: float, lane: int = 0, limits: tuple[float, float] | None = (1e-3, 1e-3)
           ) -> ParityPoint:
    return ParityPoint(cell, row, lane, 0.5, value, limits, f"{cell}: {value}")


def test_parity_chart_puts_outliers_right_of_the_limit_in_their_row() -> None:
    points = [_point("a", "env1", 3e-7), _point("b", "env1", 0.04, lane=1), _point("c", "env2", 0.0),
              _point("d", "env2", 2e-3, limits=(1e-4, 1e-2)), _point("gone", "env9", 1.0)]
    chart = charts.parity_chart(points, ["env1", "env2"], lanes=2)
    marks = {m.cell: m for m in chart.marks}
    assert set(marks) == {"a", "b", "c", "d"}  # a row that is not shown drops its points
    assert chart.counts == {"within": 2, "over": 1, "between": 1}
    assert [m.cell for m in chart.outliers] == ["b", "d"]
    env1, env2 = chart.rows
    assert env1.y < env2.y and env1.y + env1.height <= env2.y
    for m in chart.marks:  # every mark inside its row's band and the plot
        row = env1 if m.cell in "ab" else env2
        assert row.y < m.y < row.y + row.height
        assert chart.left <= m.x <= chart.right
    assert marks["a"].y < marks["b"].y  # lane 0 above lane 1
    assert marks["c"].exact and marks["c"].x == min(m.x for m in chart.marks)
    limit_env1 = [line.x for line in chart.limits if line.y0 == env1.y]
    assert len(limit_env1) == 1 and marks["a"].x < limit_env1[0] < marks["b"].x
    # env2 was judged with two values (atol 1e-4, rtol 1e-2) and env1's 1e-3: each row draws only its own.
    assert sorted(line.label for line in chart.limits if line.y0 == env2.y) == ["1e-2", "1e-3", "1e-4"]
    assert [t.label for t in chart.limit_labels] == ["1e-4", "1e-3", "1e-2"]
    # decades 1e-7 .. 1e-1 over the plot: the x of 0.04 follows the log scale
    span = chart.ticks[-1].pos - chart.ticks[0].pos
    expected = chart.ticks[0].pos + (math.log10(0.04) + 7) / 6 * span
    assert marks["b"].x == pytest.approx(expected, abs=0.01)
    assert chart.height > chart.bottom + 40  # room for the axis label and the key


def test_timing_chart_stacks_stages_in_run_order() -> None:
    rows = [("py38", {"run": 30.0, "export": 60.0, "checkout": 5.0, charts.WORKAROUND: 0.0}),
            ("py311", {"export": 100.0, charts.WORKAROUND: 200.0, "decode": 10.0, "load": -1.0})]
    chart = charts.timing_chart(rows)
    assert chart.stages == ["checkout", "export", "run", charts.WORKAROUND, "decode"]  # unknown names last
    py38, py311 = chart.bars
    assert [s.stage for s in py38.segments] == ["checkout", "export", "run"]  # zero and negative left out
    assert [s.stage for s in py311.segments] == ["export", charts.WORKAROUND, "decode"]
    for bar in chart.bars:
        assert bar.segments[0].x == chart.left
        for a, b in zip(bar.segments, bar.segments[1:], strict=False):
            assert b.x == pytest.approx(a.x + a.width, abs=0.02)  # contiguous
    px_per_s = py311.segments[0].width / 100
    assert all(s.width == pytest.approx(s.seconds * px_per_s, abs=0.02) for b in chart.bars for s in b.segments)
    assert py38.total == 95 and py311.total == 310
    assert py311.segments[-1].x + py311.segments[-1].width <= chart.right  # the longest bar fits the axis
    assert chart.ticks[-1].pos == pytest.approx(chart.right) and chart.ticks[-1].label == "6 min"  # 310 s -> min
    assert py38.y + py38.height < py311.y
    assert py311.segments[1].show_label and not py38.segments[0].show_label  # names only where they fit
    assert chart.top > max(item.y for item in chart.legend)


def test_timing_legend_wraps_when_narrow() -> None:
    rows = [("env", dict.fromkeys((*charts.STAGES, charts.WORKAROUND), 1.0))]
    wide = charts.timing_chart(rows, width=1200)
    narrow = charts.timing_chart(rows, width=360)
    assert len({item.y for item in wide.legend}) == 1
    assert len({item.y for item in narrow.legend}) > 1 and narrow.top > wide.top
    assert all(item.x + charts.text_width(item.stage) < 360 + 20 for item in narrow.legend)


def test_signature_diff_marks_what_changed() -> None:
    before = [("output", [1, 25200, 85]), ("a", [1, 3, 80, 80, 85]), ("b", [1, 3, 40, 40, 85])]
    after = [("output0", [1, 25200, 85]), ("a", [1, 3, 80, 80, 86]), ("b", [1, 3, 40, 40, 85]), ("c", [1])]
    diff = charts.signature_diff(before, after, "v6.2 (earlier ref)", "v7.0 (this cell)")
    assert [r.note for r in diff.rows] == ["name changed", "shape changed", "same", "added"]
    assert diff.changed == 3
    first = diff.rows[0]
    assert first.after is not None and first.after.name_differs and not first.after.shape_differs
    assert first.after.shape == "1×25200×85"
    assert diff.rows[3].before is None
    assert [r.y for r in diff.rows] == sorted(r.y for r in diff.rows)
    assert diff.left_x + diff.column < diff.mid_x < diff.right_x and diff.right_x + diff.column <= diff.width
    removed = charts.signature_diff(after, before, "x", "y")
    assert removed.rows[3].note == "removed" and removed.rows[3].after is None
    # A cell that wrote nothing did not remove its outputs: it never produced them.
    stopped = charts.signature_diff(before, [], "v6.2", "v7.0")
    assert {r.note for r in stopped.rows} == {"not produced"}
    long = charts.signature_diff([("x" * 60, [1])], [("x" * 60, [1])], "a", "b")
    assert long.column > 60 * 7  # the box grows with its text
    assert charts.signature_diff([(None, [1, 2])], [(None, [1, 2])], "a", "b").rows[0].note == "same"
