"""Colour on the libvips side: what a job's pixels are converted to before they are resized or encoded."""

from __future__ import annotations

import pyvips


def to_srgb8(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (or 8-bit grey), whatever came out of the loader."""
    if image.interpretation in ("b-w", "grey16"):
        return image.colourspace("b-w") if image.interpretation == "grey16" else image
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    return image
