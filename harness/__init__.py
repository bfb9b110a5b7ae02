"""yolov5-export-matrix: which YOLOv5 ref x torch env combinations still export a deployable model.

The pipeline is the layout: config -> source (+ mirror) -> patch -> envs -> run (worker/) -> results.
"""

# The release (docs/releasing.md): `--version`, the wheel's metadata and every result's `harness_version` name it.
# A release alone does not rerun cached cells: results are keyed by harness.run.matrix.RESULTS_REVISION.
__version__ = "0.2.0"
