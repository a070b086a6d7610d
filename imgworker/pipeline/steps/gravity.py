"""Where a crop window goes: the 9 gravities, libvips smart crop, detected faces, or the job's focal point.

``crop`` is the vips executor, ``crop_array`` the array one: both place the window with the same rules
(``window`` for everything but the smart crops, which are imgworker/arrays/smartcrop.py on the array).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import pyvips

from imgworker.arrays import colour, resample, smartcrop
from imgworker.arrays import image as arrays
from imgworker.core.errors import InternalError
from imgworker.pipeline.steps.base import GRAVITIES, SMART

POSITIONS = GRAVITIES + SMART
_FACE_SIDE = 640  # faces are found on a copy this size: plenty for Haar cascades, and fast


def offsets(gravity: str, free_w: int, free_h: int) -> tuple[int, int]:
    """Left/top of a window in a box with ``free_w`` x ``free_h`` spare pixels, for one of the 9 gravities."""
    x = 0 if "west" in gravity else free_w if "east" in gravity else free_w // 2
    y = 0 if "north" in gravity else free_h if "south" in gravity else free_h // 2
    return x, y


def _around(cx: float, cy: float, size: tuple[int, int], w: int, h: int) -> tuple[int, int]:
    """Window of w x h centred on (cx, cy) pixels, kept inside an image of ``size`` (width, height)."""
    left = min(max(0, round(cx - w / 2)), size[0] - w)
    top = min(max(0, round(cy - h / 2)), size[1] - h)
    return left, top


def crop(image: pyvips.Image, w: int, h: int, position: str, ctx: Any) -> pyvips.Image:
    """Crop ``image`` to w x h (each at most the image's side) at ``position``."""
    w, h = min(w, image.width), min(h, image.height)
    if (w, h) == (image.width, image.height):
        return image
    if position in ("attention", "entropy"):
        return image.smartcrop(w, h, interesting=position)
    size = (image.width, image.height)
    if position == "faces":
        box = face_box(image)
        if box is None:  # no face: the most interesting region, as thumbor falls back to features
            return image.smartcrop(w, h, interesting="attention")
        left, top = _around(box[0] + box[2] / 2, box[1] + box[3] / 2, size, w, h)
    else:
        left, top = window(position, size, w, h, ctx)
    return image.crop(left, top, w, h)


def window(position: str, size: tuple[int, int], w: int, h: int, ctx: Any) -> tuple[int, int]:
    """Left/top of a w x h window for a gravity or the focal point (the same on both executors)."""
    if position == "focal" and ctx is not None and ctx.focal is not None:
        return _around(ctx.focal[0] * size[0], ctx.focal[1] * size[1], size, w, h)
    return offsets(position if position in GRAVITIES else "centre", size[0] - w, size[1] - h)


def crop_array(xp: Any, img: Any, w: int, h: int, position: str, ctx: Any) -> Any:
    """The array executor's crop of (H, W, C) ``img`` to w x h at ``position``."""
    size = (int(img.shape[1]), int(img.shape[0]))
    w, h = min(w, size[0]), min(h, size[1])
    if (w, h) == size:
        return img
    if position == "attention":
        left, top = smartcrop.attention(xp, img, w, h)
    elif position == "entropy":
        left, top = smartcrop.entropy(xp, img, w, h)
    elif position == "faces":
        box = face_box_array(xp, img)
        if box is None:
            left, top = smartcrop.attention(xp, img, w, h)
        else:
            left, top = _around(box[0] + box[2] / 2, box[1] + box[3] / 2, size, w, h)
    else:
        left, top = window(position, size, w, h, ctx)
    return img[top : top + h, left : left + w]


def face_box_array(xp: Any, img: Any) -> tuple[int, int, int, int] | None:
    """Faces are found on the CPU from a small copy (<= 640 px), resized on the array and downloaded."""
    h, w = int(img.shape[0]), int(img.shape[1])
    scale = min(1.0, _FACE_SIDE / max(w, h))
    rgb, _ = arrays.split_alpha(arrays.as_float(xp, img))
    small = resample.resize(xp, rgb, max(1, round(w * scale)), max(1, round(h * scale)), "lanczos3") \
        if scale < 1 else rgb
    grey = colour.luminance(xp, small) if int(small.shape[2]) >= 3 else small
    pixels = arrays.download(arrays.to_uint8(xp, grey))[..., 0]
    return _detect(pixels, scale)


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
    _classifier()  # the error naming the extra comes before any work
    scale = min(1.0, _FACE_SIDE / max(image.width, image.height))
    small = image.resize(scale) if scale < 1 else image
    grey = small.colourspace("b-w")[0].cast("uchar")
    pixels = np.ndarray(buffer=grey.write_to_memory(), dtype=np.uint8, shape=(grey.height, grey.width))
    return _detect(pixels, scale)


def _detect(pixels: Any, scale: float) -> tuple[int, int, int, int] | None:
    """Haar cascade on a grey uint8 host array; the box scaled back by 1 / ``scale``."""
    faces = _classifier().detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x0 = min(int(f[0]) for f in faces)
    y0 = min(int(f[1]) for f in faces)
    x1 = max(int(f[0] + f[2]) for f in faces)
    y1 = max(int(f[1] + f[3]) for f in faces)
    return (round(x0 / scale), round(y0 / scale), round((x1 - x0) / scale), round((y1 - y0) / scale))
