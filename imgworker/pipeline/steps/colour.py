"""colour: convert to sRGB with the embedded ICC profile (CMYK, Adobe RGB, 16-bit), or keep the profile.

The array executor's pixels are sRGB (or grey) already: ICC transforms run where the pixels enter it (the
decode, on the CPU, with the same ``to_srgb``, imaging/colour.py), so its ``array`` only makes sure they are 8-bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.imaging.colour import to_srgb
from imgworker.pipeline.steps.base import StepDef, choice


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["profile"] == "keep":
        return image
    return to_srgb(image, "any")


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if o["profile"] == "keep" or img.dtype == xp.uint8:
        return img
    return arrays.to_uint8(xp, img)


STEP = StepDef("colour", "colour-manage to sRGB, or keep the profile", {"profile": choice(("srgb", "keep"), "srgb")},
               vips, array, scale_invariant=True, per_pixel=True, shorthand="profile")
