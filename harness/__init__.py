"""yolov5-export-matrix: which YOLOv5 ref x torch env combinations still export a deployable model.

The pipeline is the layout: config -> source (+ mirror) -> patch -> envs -> run (worker/) -> results.
"""

__version__ = "0.1.0"
