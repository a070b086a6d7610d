"""trim: remove a uniform border (the colour of the top-left pixel).

The box is decided once, by one implementation, on both executors: libvips' ``find_trim`` of the image
flattened on white (``box``). The array executor downloads its pixels for it (trim is a rare step, and a
box that differed between a CPU and a GPU worker would be a different picture) and cuts on the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, number


def box(image: pyvips.Image, threshold: float) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of what is not border, or None: all one colour, or no border."""
    flat = image.flatten(background=[255.0] * (image.bands - 1)) if image.hasalpha() else image
    left, top, w, h = flat.find_trim(threshold=threshold, background=flat.getpoint(0, 0))
    if w == 0 or h == 0 or (w, h) == (image.width, image.height):
        return None
    return left, top, w, h


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["threshold"] <= 0:
        return image
    found = box(image, o["threshold"])
    return image if found is None else image.crop(*found)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if o["threshold"] <= 0:
        return img
    found = box(arrays.to_vips(arrays.download(arrays.to_uint8(xp, img))), o["threshold"])
    if found is None:
        return img
    left, top, w, h = found
    return img[top : top + h, left : left + w]


STEP = StepDef("trim", "remove a uniform border", {"threshold": number(0, 255, 10.0)}, vips, array,
               shorthand="threshold")
