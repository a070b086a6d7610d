"""modulate: brightness and saturation multipliers and a hue rotation (in LCh, like sharp)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import colour
from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, number


def _noop(o: Mapping[str, Any]) -> bool:
    return bool(o["brightness"] == 1 and o["saturation"] == 1 and o["hue"] == 0)


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if _noop(o):
        return image
    b, s, hue = o["brightness"], o["saturation"], o["hue"]
    interpretation = image.interpretation if image.interpretation in ("srgb", "b-w") else "srgb"
    alpha = image[image.bands - 1] if image.hasalpha() else None
    colour_ = image.extract_band(0, n=image.bands - 1) if alpha is not None else image
    lch = colour_.colourspace("lch").linear([b, s, 1], [0, 0, hue])
    out = lch.colourspace(interpretation).cast("uchar")
    return out.bandjoin(alpha) if alpha is not None else out


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if _noop(o):
        return img
    rgb, alpha = arrays.split_alpha(arrays.as_float(xp, img))
    grey = int(rgb.shape[2]) == 1
    lch = colour.lab_to_lch(xp, colour.srgb_to_lab(xp, colour.grey_to_rgb(xp, rgb) if grey else rgb))
    scale = xp.asarray([o["brightness"], o["saturation"], 1.0], dtype=xp.float32)
    shift = xp.asarray([0.0, 0.0, o["hue"]], dtype=xp.float32)
    out = colour.lab_to_srgb(xp, colour.lch_to_lab(xp, lch * scale + shift))
    if grey:
        out = colour.luminance(xp, out)
    return arrays.to_uint8(xp, arrays.join_alpha(xp, out, alpha))  # libvips casts to uchar too


STEP = StepDef(
    "modulate",
    "brightness / saturation / hue",
    {"brightness": number(0, 10, 1.0), "saturation": number(0, 10, 1.0), "hue": number(-360, 360, 0.0)},
    vips,
    array,
    scale_invariant=True,
    per_pixel=True,
)
