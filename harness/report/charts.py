"""Geometry of the report's inline SVG charts: plain data in, positions and labels out.

No HTML and no I/O here, so every number a chart draws can be unit-tested without a browser; the templates only copy
these numbers into ``<svg>`` elements (the page stays one file, within its Content-Security-Policy). Three charts:

- parity: each cell's worst minimum passing tolerance on a log axis, one row per env, against the configured
  tolerance, so an outlier sits visibly right of the line;
- timing: seconds per env, one stacked bar per env, one segment per stage;
- signature: a cell's outputs (names, shapes) beside the previous ref's same cell, differences marked.

Text widths are estimated from character counts (the page's sans-serif at the sizes used); labels get room to spare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

CHAR_W = 6.6  # px per character at the charts' 11 px font, a little generous
SIGNATURE_CHAR_W = 7.4  # the same at 12 px, bold (the signature diff marks changes in bold)
# Stages in the order they run (harness/results/model.py Stage), then the workaround reruns as one segment.
STAGES = ("checkout", "checkpoint", "patch", "export", "load", "run", "compare")
WORKAROUND = "workaround reruns"
# Nothing is plotted below this (a tolerance of 0 means the outputs were bit-identical).
FLOOR_DECADE = -12


def text_width(text: str) -> float:
    return len(text) * CHAR_W


def shape_text(shape: Sequence[Any] | None) -> str:
    return "×".join(str(d) for d in shape or []) or "scalar"


def sci(value: float) -> str:
    """Short labels for log-axis values: 0.001 -> '1e-3', 2.5e-05 -> '2.5e-5', 0.5 -> '0.5', 0.01 -> '1e-2'."""
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value))
    if -2 < exponent < 3:
        return f"{value:.2g}"
    mantissa = f"{value / 10.0 ** exponent:.2g}"
    if mantissa == "10":  # 9.99e-4 rounds up a decade
        mantissa, exponent = "1", exponent + 1
    return f"{mantissa}e{exponent}"


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class LogScale:
    """value -> x on a log10 axis spanning whole decades [10**low, 10**high] over [x0, x1]."""

    low: int
    high: int
    x0: float
    x1: float

    def __call__(self, value: float) -> float:
        if value <= 0:
            return self.x0
        exponent = min(max(math.log10(value), self.low), self.high)
        return self.x0 + (exponent - self.low) / (self.high - self.low) * (self.x1 - self.x0)

    def ticks(self) -> list[Tick]:
        """One tick per decade, thinned to at most ~10 labels."""
        step = max(1, math.ceil((self.high - self.low) / 10))
        return [Tick(self(10.0 ** d), f"1e{d}") for d in range(self.low, self.high + 1, step)]


def log_domain(values: Sequence[float], limits: Sequence[float] = ()) -> tuple[int, int]:
    """Whole decades covering every positive value and limit (at least one decade, never below FLOOR_DECADE)."""
    positive = [v for v in (*values, *limits) if v > 0]
    if not positive:
        return FLOOR_DECADE, 0
    low = max(FLOOR_DECADE, math.floor(math.log10(min(positive))))
    high = max(low + 1, math.ceil(math.log10(max(positive))))
    return low, high


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """0, step, 2*step, ... up to the first tick >= high, the step a 1/2/5 x 10^k: a linear axis people can read."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    n = math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def seconds_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


# -- parity ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityPoint:
    """One cell's input to the parity chart.

    ``value`` is the worst (largest) minimum passing tolerance over the cell's parity checks; ``limits`` the
    configured (atol, rtol) it was judged with, or None when unknown. ``lane`` and ``sublane`` spread the cells of one
    row vertically (e.g. the ref, then variant x format), so equal values do not hide one another completely.
    """

    cell: str
    row: str
    lane: int
    sublane: float  # in [0, 1)
    value: float
    limits: tuple[float, float] | None
    label: str


Verdict = Literal["within", "between", "over", "unknown"]


@dataclass(frozen=True)
class ParityMark:
    cell: str
    x: float
    y: float
    verdict: Verdict  # within min(atol, rtol); between the two; over max(atol, rtol); no limits known
    exact: bool  # tolerance 0: bit-identical, drawn at the axis floor
    label: str


@dataclass(frozen=True)
class LimitLine:
    x: float
    y0: float
    y1: float
    label: str


@dataclass(frozen=True)
class Row:
    label: str
    y: float  # top
    height: float

    @property
    def mid(self) -> float:
        return self.y + self.height / 2


@dataclass(frozen=True)
class ParityChart:
    width: float
    height: float
    left: float  # plot area
    right: float
    top: float
    bottom: float
    rows: list[Row]
    marks: list[ParityMark]
    limits: list[LimitLine]
    ticks: list[Tick]
    limit_labels: list[Tick]  # one per distinct configured value, above the plot
    keys_y: float  # the shape key's baseline, under the axis label
    counts: dict[str, int] = field(default_factory=dict)  # verdict -> marks

    @property
    def outliers(self) -> list[ParityMark]:
        return [m for m in self.marks if m.verdict in ("over", "between")]


def judge(value: float, limits: tuple[float, float] | None) -> Verdict:
    """Where a minimum passing tolerance t sits against |d| <= atol + rtol*|e|: t <= min(atol, rtol) passes for sure,
    t > max(atol, rtol) fails at the element that set t, anything between depends on that element's magnitude."""
    if limits is None:
        return "unknown"
    if value <= min(limits):
        return "within"
    return "over" if value > max(limits) else "between"


def parity_chart(points: Sequence[ParityPoint], rows: Sequence[str], lanes: int, *, width: float = 660,
                 row_height: float = 44) -> ParityChart:
    """Lay out one mark per point: x on a shared log axis, y in its row's lane; a limit line per configured value.

    Args:
        points: one per cell with a parity number.
        rows: row labels top to bottom (envs in torch order); points of other rows are dropped.
        lanes: lanes per row (e.g. the number of refs).
    """
    left = 14 + max((text_width(r) for r in rows), default=40)
    right, top = width - 16, 20
    bottom = top + row_height * len(rows)
    by_row = {label: Row(label, top + i * row_height, row_height) for i, label in enumerate(rows)}
    kept = [p for p in points if p.row in by_row]
    limit_values = sorted({v for p in kept if p.limits for v in p.limits})
    low, high = log_domain([p.value for p in kept], limit_values)
    scale = LogScale(low, high, left + 6, right)
    lane_h = (row_height - 8) / max(lanes, 1)
    marks: list[ParityMark] = []
    for p in kept:
        row = by_row[p.row]
        y = row.y + 4 + (min(max(p.lane, 0), lanes - 1) + 0.15 + 0.7 * p.sublane) * lane_h
        marks.append(ParityMark(p.cell, round(scale(p.value), 2), round(y, 2), judge(p.value, p.limits), p.value <= 0,
                                p.label))
    lines: list[LimitLine] = []
    for row in by_row.values():
        values = sorted({v for p in kept if p.row == row.label and p.limits for v in p.limits})
        lines.extend(LimitLine(round(scale(v), 2), row.y, row.y + row.height, sci(v)) for v in values)
    counts: dict[str, int] = {}
    for m in marks:
        counts[m.verdict] = counts.get(m.verdict, 0) + 1
    labels = [Tick(round(scale(v), 2), sci(v)) for v in limit_values]
    return ParityChart(width, bottom + 62, left, right, top, bottom, list(by_row.values()), marks, lines,
                       scale.ticks(), labels, bottom + 52, counts)


# -- timing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    stage: str
    x: float
    width: float
    seconds: float
    show_label: bool  # wide enough for its stage name inside


@dataclass(frozen=True)
class Bar:
    label: str
    y: float
    height: float
    segments: list[Segment]
    total: float
    total_x: float


@dataclass(frozen=True)
class LegendItem:
    stage: str
    x: float
    y: float


@dataclass(frozen=True)
class TimingChart:
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    bars: list[Bar]
    ticks: list[Tick]
    legend: list[LegendItem]
    stages: list[str]


def stage_order(found: Sequence[str]) -> list[str]:
    """Known stages in run order, then workaround reruns, then any other name (a newer harness's) alphabetically."""
    known = [*STAGES, WORKAROUND]
    return [s for s in known if s in found] + sorted(set(found) - set(known))


def timing_chart(rows: Sequence[tuple[str, Mapping[str, float]]], *, width: float = 660,
                 bar_height: float = 22, gap: float = 8) -> TimingChart:
    """One horizontal bar per row (env), its stages stacked left to right in run order, on a shared linear axis.

    Args:
        rows: (label, {stage: seconds}) top to bottom; zero and negative times are left out.
    """
    stages = stage_order([s for _, times in rows for s, v in times.items() if v > 0])
    left = 14 + max((text_width(label) for label, _ in rows), default=40)
    right = width - 16 - text_width("00.0 min")
    legend: list[LegendItem] = []
    x, y = left, 8.0
    for stage in stages:  # a legend row that wraps when it would run past the right edge
        item_w = 18 + text_width(stage) + 14
        if x + item_w > width - 8 and x > left:
            x, y = left, y + 18
        legend.append(LegendItem(stage, x, y))
        x += item_w
    top = y + 26
    totals = [sum(v for v in times.values() if v > 0) for _, times in rows]
    longest = max(totals, default=0.0)
    unit, unit_name = next((u for u in ((3600.0, "h"), (60.0, "min")) if longest >= 3 * u[0]), (1.0, "s"))
    ticks = nice_ticks(longest / unit)
    per_second = (right - left) / (ticks[-1] * unit)
    bars: list[Bar] = []
    for i, ((label, times), total) in enumerate(zip(rows, totals, strict=True)):
        at = left
        segments: list[Segment] = []
        for stage in stages:
            seconds = times.get(stage, 0.0)
            if seconds <= 0:
                continue
            w = seconds * per_second
            segments.append(Segment(stage, round(at, 2), round(w, 2), seconds, w >= text_width(stage) + 6))
            at += w
        bars.append(Bar(label, top + i * (bar_height + gap), bar_height, segments, total, round(at + 4, 2)))
    bottom = top + len(rows) * (bar_height + gap) - gap
    axis = [Tick(round(left + t * unit * per_second, 2), f"{t:g} {unit_name}") for t in ticks]
    return TimingChart(width, bottom + 40, left, right, top, bottom, bars, axis, legend, stages)


# -- output signature beside the previous ref's ----------------------------------------------------------------


@dataclass(frozen=True)
class SignatureSide:
    name: str
    shape: str
    name_differs: bool
    shape_differs: bool


@dataclass(frozen=True)
class SignatureRow:
    index: int
    y: float
    before: SignatureSide | None  # None: no output at this index on that side
    after: SignatureSide | None
    note: str  # same / name changed / shape changed / name and shape changed / added / removed / not produced

    @property
    def same(self) -> bool:
        return self.note == "same"


@dataclass(frozen=True)
class SignatureDiff:
    width: float
    height: float
    column: float  # width of one side's box
    left_x: float
    mid_x: float
    right_x: float
    row_height: float
    before_title: str
    after_title: str
    rows: list[SignatureRow]

    @property
    def changed(self) -> int:
        return sum(not r.same for r in self.rows)


Signature = Sequence[tuple[str | None, Sequence[Any]]]


def signature_diff(before: Signature, after: Signature, before_title: str, after_title: str, *,
                   row_height: float = 24) -> SignatureDiff:
    """Pair outputs by index (the order a compiler config lists them in) and mark what differs: name, shape, or an
    output present on one side only."""
    rows: list[SignatureRow] = []
    texts: list[str] = [before_title, after_title]
    for i in range(max(len(before), len(after))):
        b = before[i] if i < len(before) else None
        a = after[i] if i < len(after) else None
        name_differs = shape_differs = True
        if b is not None and a is not None:
            name_differs, shape_differs = b[0] != a[0], list(b[1]) != list(a[1])
        sides = [None if s is None else SignatureSide("–" if s[0] is None else str(s[0]), shape_text(s[1]),
                                                       name_differs, shape_differs) for s in (b, a)]
        texts += [f"{s.name}  {s.shape}" for s in sides if s]
        rows.append(SignatureRow(i, 30 + i * row_height, sides[0], sides[1], _note(b, a, bool(after))))
    column = max(160.0, max(len(t) for t in texts) * SIGNATURE_CHAR_W + 34)
    left_x, mid_x = 4.0, 4 + column + 24
    right_x = mid_x + 24
    height = 30 + max(len(rows), 1) * row_height + 6
    return SignatureDiff(right_x + column + 4, height, column, left_x, mid_x, right_x, row_height, before_title,
                         after_title, rows)


def _note(before: Any, after: Any, after_has_outputs: bool) -> str:
    if before is None:
        return "added"
    if after is None:
        # A cell that stopped before writing outputs did not remove them: say so rather than "removed".
        return "removed" if after_has_outputs else "not produced"
    what = [w for w, d in (("name", before[0] != after[0]), ("shape", list(before[1]) != list(after[1]))) if d]
    return " and ".join(what) + " changed" if what else "same"
