"""modulate: brightness and saturation multipliers and a hue rotation (in LCh, like sharp)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, number


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    b, s, hue = o["brightness"], o["saturation"], o["hue"]
    if b == 1 and s == 1 and hue == 0:
        return image
    interpretation = image.interpretation if image.interpretation in ("srgb", "b-w") else "srgb"
    alpha = image[image.bands - 1] if image.hasalpha() else None
    colour = image.extract_band(0, n=image.bands - 1) if alpha is not None else image
    lch = colour.colourspace("lch").linear([b, s, 1], [0, 0, hue])
    out = lch.colourspace(interpretation).cast("uchar")
    return out.bandjoin(alpha) if alpha is not None else out


STEP = StepDef(
    "modulate",
    "brightness / saturation / hue",
    {"brightness": number(0, 10, 1.0), "saturation": number(0, 10, 1.0), "hue": number(-360, 360, 0.0)},
    apply,
    scale_invariant=True,
    per_pixel=True,
)
