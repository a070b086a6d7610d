"""sharpen: libvips unsharp masking on lightness (sharp's sharpen: sigma, m1 flat, m2 jagged, x1 threshold)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, number


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["sigma"] <= 0 or (o["m1"] == 0 and o["m2"] == 0):
        return image
    interpretation, fmt = image.interpretation, image.format
    out = image.sharpen(sigma=o["sigma"], m1=o["m1"], m2=o["m2"], x1=o["x1"])
    if out.interpretation != interpretation:  # sharpen works in LABS; come back to what we had
        out = out.colourspace(interpretation)
    return out.cast(fmt)


STEP = StepDef(
    "sharpen",
    "unsharp mask",
    {"sigma": number(0, 10, 1.0), "m1": number(0, 100, 1.0), "m2": number(0, 100, 2.0), "x1": number(0, 100, 2.0)},
    apply,
    backends=("cpu", "gpu"),
    shorthand="sigma",
)
