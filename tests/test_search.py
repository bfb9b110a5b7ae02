"""The workaround search as a pure state machine: the real cause table, no torch, no processes (well under a second).

Each test tells the search what a cell's attempts failed with, as the batch runner would after a real run, and checks
what it proposes next. The chains are the ones the matrix meets on torch 2.14 (weights_only, then the dynamo
exporter's opset; v5.0's XNNPACK), on old envs (numpy aliases: a pin) and on ONNX Runtime failures (no workaround).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.run.search import Learned, Reuse, Run, WorkaroundSearch, learn_key
from harness.verify import causes


def cause(name: str) -> causes.Cause:
    return next(c for c in causes.CAUSES if c.name == name)


WEIGHTS = cause("torch.load weights_only")
OPSET = cause("ONNX dynamo: opset differs from requested")
XNNPACK = cause("TorchScript: no XNNPACK")
NUMPY = cause("numpy alias removed")
GRID = cause("ONNX dynamic: grid fixed at export size")  # no workaround
W, D, M = WEIGHTS.workaround.name, OPSET.workaround.name, XNNPACK.workaround.name  # type: ignore[union-attr]


def test_a_cell_that_passed_out_of_the_box_has_nothing_to_search() -> None:
    assert WorkaroundSearch(None, passed=True).propose() is None


@pytest.mark.parametrize("start", [None, GRID], ids=["unclassified", "no workaround"])
def test_a_failure_without_a_known_fix_ends_the_search_at_once(start: causes.Cause | None) -> None:
    search = WorkaroundSearch(start, passed=False)
    assert search.propose() is None and search.done


def test_one_fix_that_works() -> None:
    search = WorkaroundSearch(WEIGHTS, passed=False)
    assert search.propose() == Run((W,))
    search.tell((W,), None, passed=True)
    assert search.propose() is None
    assert search.learned("cell") is None  # a single step is found at once anywhere: nothing worth sharing


def test_fixes_accumulate_while_each_new_failure_has_one() -> None:
    search = WorkaroundSearch(WEIGHTS, passed=False)
    assert search.propose() == Run((W,))
    search.tell((W,), OPSET, passed=False)  # loads now, but dynamo writes opset 18
    assert search.propose() == Run((W, D))
    search.tell((W, D), None, passed=True)
    assert search.propose() is None
    # What the skipped step met travels with the chain: why its second fix is there, for the cells that borrow it.
    assert search.learned("v7.0__e__1__onnx") == Learned((W, D), "v7.0__e__1__onnx", (W,), (OPSET.name,))


def test_three_step_chain_records_every_skipped_prefix() -> None:
    search = WorkaroundSearch(WEIGHTS, passed=False)
    for names, next_cause in (((W,), OPSET), ((W, D), XNNPACK)):
        assert search.propose() == Run(names)
        search.tell(names, next_cause, passed=False)
    assert search.propose() == Run((W, D, M))
    search.tell((W, D, M), None, passed=True)
    learned = search.learned("c")
    assert learned is not None and learned.skipped == (W, f"{W} + {D}")
    assert learned.met == (OPSET.name, XNNPACK.name)


def test_a_cause_whose_fix_is_already_applied_ends_the_search() -> None:
    search = WorkaroundSearch(WEIGHTS, passed=False)
    assert search.propose() == Run((W,))
    search.tell((W,), WEIGHTS, passed=False)  # the fix did not take: same cause again
    assert search.propose() is None and search.done


def test_a_pin_workaround_is_proposed_like_any_other() -> None:
    search = WorkaroundSearch(NUMPY, passed=False)
    step = search.propose()
    assert isinstance(step, Run) and step.names == ("numpy==1.23.5",)
    assert causes.WORKAROUNDS[step.names[0]].pins == {"numpy": "1.23.5"}  # the runner builds a sibling env


def test_a_borrowed_chain_runs_whole_first_and_is_not_relearned() -> None:
    borrowed = Learned((W, D), "v7.0__e__1__onnx", (W,))
    search = WorkaroundSearch(WEIGHTS, passed=False, borrowed=borrowed)
    assert search.propose() == Run((W, D), borrowed)
    search.tell((W, D), None, passed=True)
    assert search.propose() is None and search.learned("v7.0__e__3__onnx") is None


def test_a_borrowed_chain_that_fails_for_an_unfixable_cause_restarts_step_by_step() -> None:
    borrowed = Learned((W, D), "v7.0__e__1__onnx", (W,))
    search = WorkaroundSearch(WEIGHTS, passed=False, borrowed=borrowed)
    search.propose()
    search.tell((W, D), GRID, passed=False)
    assert search.propose() == Run((W,))  # from the cell's own out-of-the-box failure
    search.tell((W,), None, passed=True)  # a shorter chain works on this variant
    assert search.propose() is None


def test_a_borrowed_chain_that_meets_a_new_fixable_cause_is_extended() -> None:
    borrowed = Learned((W, D), "v5.0__e__1__onnx", (W,))
    search = WorkaroundSearch(WEIGHTS, passed=False, borrowed=borrowed)
    search.propose()
    search.tell((W, D), XNNPACK, passed=False)
    assert search.propose() == Run((W, D, M))


def test_the_restarted_search_reuses_the_borrowed_attempt_instead_of_rerunning_it() -> None:
    borrowed = Learned((W, D), "v7.0__e__1__onnx", (W,))
    search = WorkaroundSearch(WEIGHTS, passed=False, borrowed=borrowed)
    search.propose()
    search.tell((W, D), GRID, passed=False)
    assert search.propose() == Run((W,))
    search.tell((W,), OPSET, passed=False)
    assert search.propose() == Reuse((W, D))  # that very chain ran already: its attempt is the verdict
    assert search.propose() is None and search.done


def test_exhaustive_mode_is_a_search_without_a_borrowed_chain() -> None:
    # --exhaustive: the runner passes no borrowed chain, so the same cell searches step by step.
    search = WorkaroundSearch(WEIGHTS, passed=False, borrowed=None)
    assert search.propose() == Run((W,))


def test_chains_are_shared_by_commit_format_and_first_cause_only_when_that_cause_has_a_fix() -> None:
    assert learn_key("abc", "onnx", WEIGHTS) == ("abc", "onnx", WEIGHTS.name)
    assert learn_key("abc", "onnx", GRID) is None and learn_key("abc", "onnx", None) is None


def test_the_search_ends_whatever_it_is_told() -> None:
    # Adversarial outcomes: every attempt fails for a cause whose fix is not applied yet, in table order.
    fixable = [c for c in causes.CAUSES if c.workaround]
    search = WorkaroundSearch(fixable[0], passed=False)
    steps = 0
    while (step := search.propose()) is not None:
        assert isinstance(step, Run) and len(set(step.names)) == len(step.names)  # no fix applied twice
        steps += 1
        search.tell(step.names, fixable[min(steps, len(fixable) - 1)], passed=False)
    assert steps <= len(causes.WORKAROUNDS)


def test_learned_chains_outlive_the_run_in_their_file(tmp_path: Path) -> None:
    """A chain remembered by one run is read by the next (the file is the store); a chain naming a workaround the
    harness no longer has is ignored, and an unreadable file only costs the search again."""
    from harness.run.variant import LearnedChains, learned_path

    path = learned_path(tmp_path, "pins")
    key = learn_key("c0ffee", "onnx", WEIGHTS)
    assert key is not None
    chain = Learned((W, D), "v7.0__e__native__onnx", (W,), (OPSET.name,))
    LearnedChains(path).remember(key, chain)
    LearnedChains(path).remember(("c0ffee", "torchscript", WEIGHTS.name), Learned((W, M), "x", (W,)))  # merged
    later = LearnedChains(path)
    assert later.get(key) == chain and later.get(("c0ffee", "torchscript", WEIGHTS.name)) is not None
    rows = json.loads(path.read_text())
    rows[0]["names"] = [W, "a workaround since removed"]
    path.write_text(json.dumps(rows))
    assert LearnedChains(path).get(key) is None
    path.write_text("{not json")
    assert LearnedChains(path).chains == {}
    assert LearnedChains(None).get(key) is None  # no file: chains live for the run only
