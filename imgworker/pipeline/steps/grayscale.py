"""grayscale: convert to one grey channel (alpha kept): libvips' b-w, the luminance of linear sRGB."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import colour
from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, flag


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if not o["enabled"] or image.interpretation in ("b-w", "grey16"):
        return image
    return image.colourspace("b-w")


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if not o["enabled"] or int(img.shape[2]) in (1, 2):
        return img
    rgb, alpha = arrays.split_alpha(img)
    return arrays.like(xp, arrays.join_alpha(xp, colour.luminance(xp, rgb), alpha), img)


STEP = StepDef("grayscale", "to grey", {"enabled": flag(True)}, vips, array,
               scale_invariant=True, per_pixel=True, shorthand="enabled")
