"""Code that runs *inside* an environment's interpreter (torch, onnx, onnxruntime and the ref's own modules).

The harness process never imports torch or a user's pickle; it sends this package a JSON job and reads a JSON answer.
Keep it importable on Python 3.8 with nothing but the stdlib at import time: heavy imports happen inside functions,
because a missing or broken package is itself a result worth reporting.
"""

# What YOLOv5 v6.0-v7.0 download at import time; the probe puts them in YOLOV5_CONFIG_DIR.
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
