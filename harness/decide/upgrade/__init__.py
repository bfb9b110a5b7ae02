"""The upgrade decision: what changes between two refs, two envs, or both, where each change comes from (YOLOv5's
first commit, or the first env and the packages that moved), and the edits a deployer makes. `python -m harness
upgrade` (question.py) ties them together; the changes themselves come from the diff engine (harness/decide/diff/),
which
the gate shares.

- ``question``: one question answered: run both sides (and the corner, for both axes), compare, pin made-up output
  names, find where each failing group comes from.
- ``bisect``: the first commit of a change on the first-parent history between two refs, probing one cell per step;
  probes are ordinary cached results keyed by commit.
- ``envsearch``: the first env of a change in the config's order, and the packages whose versions moved there.
- ``advice``: the edits (tpu-mlir --output_names before/after, workarounds to add, opset / IR to expect, the patch
  variant that keeps a native export's old outputs, pinned names), each once with the groups it serves.
- ``render``: the console, upgrade.md (a summary first) and upgrade.json (the HTML section is
  report/templates/_upgrade.html.j2).
"""
