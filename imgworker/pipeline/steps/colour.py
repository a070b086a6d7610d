"""colour: convert to sRGB with the embedded ICC profile (CMYK, Adobe RGB, 16-bit), or keep the profile.

The array executor's pixels are sRGB (or grey) already: ICC transforms run where the pixels enter it (the
decode, on the CPU, with this module's ``to_srgb``), so its ``array`` only makes sure they are 8-bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, choice


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    grey = image.interpretation in ("b-w", "grey16")
    if "icc-profile-data" in image.get_fields() and not grey:
        try:
            return image.icc_transform("srgb", embedded=True, intent="perceptual", depth=8)
        except pyvips.Error:
            pass  # a broken embedded profile: fall back to the built-in conversion below
    if grey:
        return image if image.format == "uchar" else image.colourspace("b-w")
    if image.interpretation != "srgb" or image.format != "uchar":
        return image.colourspace("srgb").cast("uchar")
    return image


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["profile"] == "keep":
        return image
    return to_srgb(image)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if o["profile"] == "keep" or img.dtype == xp.uint8:
        return img
    return arrays.to_uint8(xp, img)


STEP = StepDef("colour", "colour-manage to sRGB, or keep the profile", {"profile": choice(("srgb", "keep"), "srgb")},
               vips, array, scale_invariant=True, per_pixel=True, shorthand="profile")
