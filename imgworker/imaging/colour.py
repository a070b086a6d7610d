"""Colour on the libvips side: the one conversion to 8-bit sRGB (or 8-bit grey) every path uses.

Which embedded ICC profile converts the pixels is the caller's ``profile`` policy, because the paths differ for
a reason: ``"none"``, a plain resize, whose loader (libvips' thumbnail, or the fast JPEG path) already applied
any profile it honours; ``"cmyk"``, the GPU backend's CPU decode, which applies only a CMYK source's own
profile as thumbnail does (relative intent); ``"any"``, the pipeline's ``colour`` step and encoder, which
apply every embedded profile (perceptual intent), falling back to libvips' built-in conversion when a broken
profile does not load.
"""

from __future__ import annotations

from typing import Literal

import pyvips

Profile = Literal["none", "cmyk", "any"]


def to_srgb(image: pyvips.Image, profile: Profile = "none") -> pyvips.Image:
    """``image`` as 8-bit sRGB (8-bit grey stays grey), its embedded profile applied per ``profile``."""
    grey = image.interpretation in ("b-w", "grey16")
    if profile != "none" and not grey and "icc-profile-data" in image.get_fields():
        if profile == "any":
            try:
                return image.icc_transform("srgb", embedded=True, intent="perceptual", depth=8)
            except pyvips.Error:
                pass  # a broken embedded profile: fall back to the built-in conversion below
        elif profile == "cmyk" and image.interpretation == "cmyk":
            image = image.icc_transform("srgb", embedded=True, input_profile="cmyk")
    if grey:
        return image if image.format == "uchar" else image.colourspace("b-w")
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
        return image if image.format == "uchar" else image.cast("uchar")
    return image
