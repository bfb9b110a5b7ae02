"""The upgrade decision: what changes between two refs (or envs), the commit that made each change, and
the edits a deployer makes. `python -m harness upgrade` (question.py) ties them together; the gate shares compare.py.

- ``compare``: cell pairs -> grouped changes (the facts a deployment depends on, kinds of change, groups, scopes).
- ``bisect``: the first commit of a change on the first-parent history between two refs, probing one cell per step;
  probes are ordinary cached results keyed by commit.
- ``advice``: the edits per group (tpu-mlir --output_names before/after, workarounds to add, opset / IR to expect,
  the patch variant that keeps a native export's old outputs), or "nothing to edit".
- ``question``: one question answered: run both sides, compare, bisect the failing groups.
- ``render``: the console, upgrade.md and upgrade.json (the HTML section is report/templates/_upgrade.html.j2).
"""
