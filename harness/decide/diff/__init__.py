"""The diff engine: two sides of cell results -> grouped changes. The gate asks it of a baseline and today's results,
``upgrade`` of ref A and ref B, env X and env Y, or both at once.

- ``facts``: one side of a pair read off a result (``Facts.from_result``, the one adapter to harness/results/model.py),
  and what a gate baseline keeps.
- ``changes``: the kinds of change (a table: add a kind there) and the changes of one pair.
- ``groups``: pairs -> groups, one per change with every cell it touches; which axis each came with; how a group
  reads (scope) and what a probe reads to find where it starts.
"""

from harness.decide.diff.changes import KINDS, NO_RESULT, Change, Kind, changes, title
from harness.decide.diff.facts import AUTO_NAMES, Facts, OutputFacts, is_auto_name, shape_text
from harness.decide.diff.groups import (
    Group,
    Member,
    Pair,
    Part,
    Slot,
    axes,
    bisect_value,
    group,
    probe_ends,
    representative,
    scope,
)

__all__ = ["AUTO_NAMES", "KINDS", "NO_RESULT", "Change", "Facts", "Group", "Kind", "Member", "OutputFacts", "Pair",
           "Part", "Slot", "axes", "bisect_value", "changes", "group", "is_auto_name", "probe_ends", "representative",
           "scope", "shape_text", "title"]
