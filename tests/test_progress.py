"""Progress lines: [k/N], elapsed time and an estimate that counts only computed cells; the matrix-wide estimate."""

from __future__ import annotations

from harness.report import junit, view
from harness.results.model import Attempt, CellResult, CheckpointNote
from harness.results.verdict import OUTCOMES
from harness.run.matrix import summary
from harness.run.progress import Progress, duration, outer_from_env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_count_cells_and_estimate_from_computed_ones_only() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = Progress("py311-torch2.14", 4, lines.append, clock=clock)
    progress.cell(CellResult(cell="a", ref="v7.0", variant="1", format="onnx", attempts=[Attempt(status="pass")]),
                  kept=True)
    assert lines[-1].startswith("[py311-torch2.14] [1/4] v7.0 variant 1 onnx: unchanged, kept (works) · 0 s elapsed")
    assert "left" not in lines[-1]  # a kept cell says nothing about the rate
    clock.now += 90
    progress.cell(CellResult(cell="b", ref="v7.0", variant="3", format="onnx",
                             attempts=[Attempt(status="pass", message="3 output(s)")]))
    assert lines[-1] == ("[py311-torch2.14] [2/4] v7.0 variant 3 onnx: works — 3 output(s) · 1 min 30 s elapsed, "
                         "about 3 min 00 s left")
    progress.cell(CellResult(cell="b", ref="v7.0"))  # a cell is said once
    assert len(lines) == 2
    progress.cell(CellResult(cell="c", ref="v3.1", variant="native", format="onnx", attempts=[Attempt(status="pass")],
                             checkpoint=CheckpointNote(built_with="torch.no_grad()")))
    assert lines[-1].startswith("[py311-torch2.14] [3/4] v3.1 variant native onnx: works "
                                "[checkpoint built with torch.no_grad()] · ")


def test_the_matrix_wide_estimate_counts_envs_done_before() -> None:
    lines: list[str] = []
    clock = Clock()
    # Env 2 of 4 started 600 s after the matrix did; half of its cells are done after another 300 s.
    progress = Progress("e", 2, lines.append, outer=(clock.now - 600, 2, 4), clock=clock)
    clock.now += 300
    progress.cell(CellResult(cell="a", ref="v7.0", variant="1", format="onnx", attempts=[Attempt(status="pass")]))
    # 1.5 of 4 envs in 900 s: 1500 s left.
    assert lines[-1].endswith("matrix env 2/4, about 25 min 00 s left in all")


def test_outer_progress_is_read_leniently() -> None:
    assert outer_from_env("1700000000.5 3/7") == (1700000000.5, 3, 7)
    assert outer_from_env("") is None and outer_from_env("x 3/7") is None and outer_from_env("1 8/7") is None


def test_durations_read_as_people_write_them() -> None:
    assert [duration(s) for s in (4.4, 185, 4380)] == ["4 s", "3 min 05 s", "1 h 13 min"]


def test_the_progress_line_the_summary_and_the_json_use_one_word_per_cell() -> None:
    """A cell that stopped at a stage (the checkpoint could not be built; a rerun that still stops at export) reads
    "error" on its progress line, in the run summary and in its JSON; one that ran and was wrong reads "broken"."""
    stopped = CellResult(cell="a", ref="v3.1", variant="native", format="onnx",
                         attempts=[Attempt(status="error", stage="checkpoint", cause="checkpoint",
                                           message="checkpoint: in-place on a leaf view")])
    rerun = CellResult(cell="b", ref="v9.9", variant="1", format="onnx", decided=1,
                       attempts=[Attempt(status="error", cause="torch.load weights_only"),
                                 Attempt(name="W", status="error", stage="export", cause="missing module")])
    wrong = CellResult(cell="c", ref="v7.0", variant="3", format="onnx",
                       attempts=[Attempt(status="fail", stage="compare", cause="parity beyond tolerance")])
    fixed = CellResult(cell="d", ref="v7.0", variant="1", format="onnx", decided=1,
                       attempts=[Attempt(status="error", cause="x"), Attempt(name="W", status="pass")])
    lines: list[str] = []
    progress = Progress("e", 4, lines.append, clock=Clock())
    for result in (stopped, rerun, wrong, fixed):
        progress.cell(result)
    words = [line.split(": ", 1)[1].split(":")[0].split(" ")[0] for line in lines]
    assert words == ["error", "error", "broken", "works"]
    assert summary([stopped, rerun, wrong, fixed]) == "1 workaround, 1 broken, 2 error"
    assert [r.to_json()["outcome"] for r in (stopped, rerun, wrong, fixed)] == ["error", "error", "broken",
                                                                               "workaround"]
    assert lines[3].split(": ", 1)[1].startswith("works with workaround W (out of the box: x)")
    # The report: its legend has one entry per outcome, and each square's label and count use the same word.
    model = view.build([stopped, rerun, wrong, fixed])
    assert tuple(view.OUTCOME_LABELS) == OUTCOMES
    assert model.counts == {"error": 2, "broken": 1, "workaround": 1}
    labels = {e.cell: e.label.split(": ", 1)[1] for e in model.entries}
    assert labels["a"].startswith("error: ") and labels["b"].startswith("error: ") and labels["c"].startswith("broken")
    # JUnit: error cells are <error>, the broken one a <failure>, and the message is the same line.
    suite = junit.build([stopped, rerun, wrong, fixed])
    assert (suite.get("errors"), suite.get("failures")) == ("2", "1")
    assert [e.get("message") for e in suite.iter("error")] == [stopped.verdict, rerun.verdict]
