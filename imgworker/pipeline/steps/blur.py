"""blur: Gaussian blur with a sigma in pixels (libvips gaussblur: integer mask down to 0.2 of its peak)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import filters
from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, number

MIN_SIGMA = 0.3  # below this a Gaussian changes nothing visible


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["sigma"] < MIN_SIGMA:
        return image
    fmt = image.format
    return image.gaussblur(o["sigma"]).cast(fmt)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if o["sigma"] < MIN_SIGMA:
        return img
    return arrays.like(xp, filters.gaussblur(xp, img, o["sigma"]), img)


STEP = StepDef("blur", "Gaussian blur", {"sigma": number(0, 1000)}, vips, array, shorthand="sigma")
