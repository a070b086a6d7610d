"""crop: cut to width x height (no scaling) at a gravity, a smart-crop position or the focal point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.pipeline.steps import gravity
from imgworker.pipeline.steps.base import StepDef, choice, integer


def _size(o: Mapping[str, Any], width: int, height: int) -> tuple[int, int]:
    return min(o["width"] or width, width), min(o["height"] or height, height)


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    w, h = _size(o, image.width, image.height)
    if (w, h) == (image.width, image.height):
        return image
    return gravity.crop(image, w, h, o["gravity"], ctx)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    w, h = _size(o, int(img.shape[1]), int(img.shape[0]))
    if (w, h) == (int(img.shape[1]), int(img.shape[0])):
        return img
    return gravity.crop_array(xp, img, w, h, o["gravity"], ctx)


STEP = StepDef(
    "crop",
    "cut to a size at a gravity / smart position",
    {
        "width": integer(1, 16_384, None),
        "height": integer(1, 16_384, None),
        "gravity": choice(gravity.POSITIONS, "centre"),
    },
    vips,
    array,
)
