"""trim: remove a uniform border (the colour of the top-left pixel, or a given background).

libvips' ``find_trim`` on the array executor: the image flattened on white, its absolute difference from
the top-left pixel, 3x3 median (noise), any band >= threshold; the box holding every such pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import filters
from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, number


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["threshold"] <= 0:
        return image
    flat = image.flatten(background=[255.0] * (image.bands - 1)) if image.hasalpha() else image
    background = flat.getpoint(0, 0)
    left, top, w, h = flat.find_trim(threshold=o["threshold"], background=background)
    if w == 0 or h == 0 or (w, h) == (image.width, image.height):
        return image  # all one colour, or no border: nothing sensible to trim
    return image.crop(left, top, w, h)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if o["threshold"] <= 0:
        return img
    flat, alpha = arrays.split_alpha(arrays.as_float(xp, img))
    if alpha is not None:
        a = alpha / 255.0
        flat = flat * a + 255.0 * (1.0 - a)
    diff = filters.median3(xp, xp.abs(flat - flat[0, 0]))
    mask = (diff >= o["threshold"]).any(axis=2)
    rows, cols = xp.nonzero(mask.any(axis=1))[0], xp.nonzero(mask.any(axis=0))[0]
    if int(rows.size) == 0 or int(cols.size) == 0:
        return img
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (right - left, bottom - top) == (int(img.shape[1]), int(img.shape[0])):
        return img
    return img[top:bottom, left:right]


STEP = StepDef("trim", "remove a uniform border", {"threshold": number(0, 255, 10.0)}, vips, array,
               shorthand="threshold")
