"""colour: convert to sRGB with the embedded ICC profile (CMYK, Adobe RGB, 16-bit), or keep the profile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, choice


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


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["profile"] == "keep":
        return image
    return to_srgb(image)


STEP = StepDef("colour", "colour-manage to sRGB, or keep the profile", {"profile": choice(("srgb", "keep"), "srgb")},
               apply, backends=("cpu", "gpu"), scale_invariant=True, per_pixel=True, shorthand="profile")
