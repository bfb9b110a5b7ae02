"""The parity input: a real photo letterboxed to the export size, as YOLOv5's detect.py feeds it (not noise,
which hides decode errors in the sigmoid's flat tails)."""

import os

import numpy as np


def find_photo(tree):
    """The ref's own sample photo when it ships one, else matplotlib's sample photo (installed with YOLOv5's deps)."""
    for name in ("bus.jpg", "zidane.jpg"):
        path = os.path.join(tree, "data", "images", name)
        if os.path.isfile(path):
            return path
    import matplotlib as mpl

    path = os.path.join(os.path.dirname(mpl.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    if os.path.isfile(path):
        return path
    raise FileNotFoundError("no sample photo: neither data/images/bus.jpg in the ref nor matplotlib's grace_hopper.jpg")


def letterbox(image, size, color=114):
    """Resize keeping the aspect ratio so the long side is ``size``, pad the rest to a ``size`` x ``size`` square."""
    import cv2

    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), color, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return canvas


def load_batch(photo, size, batch=1):
    """(batch, 3, size, size) float32 in [0, 1], RGB; extra batch items are mirrored copies so they differ."""
    import cv2

    bgr = cv2.imread(photo)
    if bgr is None:
        raise ValueError(f"cannot read image {photo}")
    rgb = letterbox(bgr, size)[:, :, ::-1]
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0
    items = [chw if i % 2 == 0 else chw[:, :, ::-1] for i in range(batch)]
    return np.ascontiguousarray(np.stack(items))
