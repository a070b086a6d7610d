"""Where a crop window goes: the 9 gravities, libvips smart crop, detected faces, or the job's focal point."""

from __future__ import annotations

import functools
import os
from typing import Any

import pyvips

from ...errors import InternalError
from .base import GRAVITIES, SMART

POSITIONS = GRAVITIES + SMART
_FACE_SIDE = 640  # faces are found on a copy this size: plenty for Haar cascades, and fast


def offsets(gravity: str, free_w: int, free_h: int) -> tuple[int, int]:
    """Left/top of a window in a box with ``free_w`` x ``free_h`` spare pixels, for one of the 9 gravities."""
    x = 0 if "west" in gravity else free_w if "east" in gravity else free_w // 2
    y = 0 if "north" in gravity else free_h if "south" in gravity else free_h // 2
    return x, y


def _around(cx: float, cy: float, image: pyvips.Image, w: int, h: int) -> tuple[int, int]:
    """Window of w x h centred on (cx, cy) pixels, kept inside the image."""
    left = min(max(0, round(cx - w / 2)), image.width - w)
    top = min(max(0, round(cy - h / 2)), image.height - h)
    return left, top


def crop(image: pyvips.Image, w: int, h: int, position: str, ctx: Any) -> pyvips.Image:
    """Crop ``image`` to w x h (each at most the image's side) at ``position``."""
    w, h = min(w, image.width), min(h, image.height)
    if (w, h) == (image.width, image.height):
        return image
    if position in ("attention", "entropy"):
        return image.smartcrop(w, h, interesting=position)
    if position == "focal" and ctx is not None and ctx.focal is not None:
        left, top = _around(ctx.focal[0] * image.width, ctx.focal[1] * image.height, image, w, h)
    elif position == "faces":
        box = face_box(image)
        if box is None:  # no face: the most interesting region, as thumbor falls back to features
            return image.smartcrop(w, h, interesting="attention")
        left, top = _around(box[0] + box[2] / 2, box[1] + box[3] / 2, image, w, h)
    else:
        left, top = offsets(position if position in GRAVITIES else "centre", image.width - w, image.height - h)
    return image.crop(left, top, w, h)


@functools.cache
def _classifier() -> Any:
    try:
        import cv2
    except ImportError:
        raise InternalError(
            "the 'faces' position needs OpenCV: pip install 'imgworker[faces]' (opencv-python-headless)"
        ) from None
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), "haarcascade_frontalface_default.xml")
    if not hasattr(cv2, "CascadeClassifier") or not os.path.exists(path):
        raise InternalError(
            f"OpenCV {cv2.__version__} has no Haar face cascade; install opencv-python-headless>=4.9,<5 "
            "(the [faces] extra), which ships cv2.data.haarcascades"
        )
    return cv2.CascadeClassifier(path)


def face_box(image: pyvips.Image) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, width, height) of every face found, in ``image`` pixels; None if none."""
    import numpy as np

    classifier = _classifier()
    scale = min(1.0, _FACE_SIDE / max(image.width, image.height))
    small = image.resize(scale) if scale < 1 else image
    grey = small.colourspace("b-w")[0].cast("uchar")
    pixels = np.ndarray(buffer=grey.write_to_memory(), dtype=np.uint8, shape=(grey.height, grey.width))
    faces = classifier.detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x0 = min(int(f[0]) for f in faces)
    y0 = min(int(f[1]) for f in faces)
    x1 = max(int(f[0] + f[2]) for f in faces)
    y1 = max(int(f[1] + f[3]) for f in faces)
    return (round(x0 / scale), round(y0 / scale), round((x1 - x0) / scale), round((y1 - y0) / scale))
