"""The upgrade decision (issue 12): what changes between two refs (or envs), the commit that made each change, and
the edits a deployer makes.

- ``bisect``: the first commit of a change on the first-parent history between two refs, probing one cell per step;
  probes are ordinary cached results keyed by commit.
"""
