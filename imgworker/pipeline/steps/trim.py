"""trim: remove a uniform border (the colour of the top-left pixel, or a given background)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, number


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["threshold"] <= 0:
        return image
    flat = image.flatten(background=[255.0] * (image.bands - 1)) if image.hasalpha() else image
    background = flat.getpoint(0, 0)
    left, top, w, h = flat.find_trim(threshold=o["threshold"], background=background)
    if w == 0 or h == 0 or (w, h) == (image.width, image.height):
        return image  # all one colour, or no border: nothing sensible to trim
    return image.crop(left, top, w, h)


STEP = StepDef("trim", "remove a uniform border", {"threshold": number(0, 255, 10.0)}, apply, shorthand="threshold")
