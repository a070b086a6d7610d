"""flatten: composite the alpha channel onto a background colour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, colour


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if not image.hasalpha():
        return image
    bg = list(o["background"]) if image.bands >= 3 else [float(o["background"][0])]
    return image.flatten(background=bg).cast(image.format)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if not arrays.has_alpha(img):
        return img
    colour_, alpha = arrays.split_alpha(arrays.as_float(xp, img))
    assert alpha is not None
    a = alpha / 255.0
    bg = xp.asarray(arrays.fill(o["background"], int(colour_.shape[2])), dtype=xp.float32)
    return arrays.like(xp, colour_ * a + bg * (1.0 - a), img)


STEP = StepDef("flatten", "remove alpha onto a background", {"background": colour()}, vips, array,
               scale_invariant=True, per_pixel=True, shorthand="background")
