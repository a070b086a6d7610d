"""sharpen: libvips unsharp masking on lightness (sharp's sharpen: sigma, m1 flat, m2 jagged, x1 threshold).

libvips' ``sharpen``: in Lab, L minus its Gaussian blur (integer mask down to 0.1 of its peak) is the
detail ``d``; L gains ``m1 * d`` where |d| < x1 and ``m2`` beyond (continuous at x1), limited to +10 / -20
(y2 / y3, in L units 0-100). The array executor does exactly that on L and converts back to sRGB.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import colour, filters
from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, number

Y2, Y3 = 10.0, 20.0  # libvips' defaults: the most a pixel is lightened / darkened


def _noop(o: Mapping[str, Any]) -> bool:
    return bool(o["sigma"] <= 0 or (o["m1"] == 0 and o["m2"] == 0))


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if _noop(o):
        return image
    interpretation, fmt = image.interpretation, image.format
    out = image.sharpen(sigma=o["sigma"], m1=o["m1"], m2=o["m2"], x1=o["x1"])
    if out.interpretation != interpretation:  # sharpen works in LABS; come back to what we had
        out = out.colourspace(interpretation)
    return out.cast(fmt)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if _noop(o):
        return img
    rgb, alpha = arrays.split_alpha(arrays.as_float(xp, img))
    grey = int(rgb.shape[2]) == 1
    lab = colour.srgb_to_lab(xp, colour.grey_to_rgb(xp, rgb) if grey else rgb)
    lightness = lab[..., :1]
    d = lightness - filters.gaussblur(xp, lightness, o["sigma"], min_ampl=0.1)
    m1, m2, x1 = o["m1"], o["m2"], o["x1"]
    ad = xp.abs(d)
    gain = xp.where(ad < x1, d * m1, xp.sign(d) * (x1 * m1 + (ad - x1) * m2))
    lab = xp.concatenate([xp.clip(lightness + xp.clip(gain, -Y3, Y2), 0.0, 100.0), lab[..., 1:]], axis=2)
    out = colour.lab_to_srgb(xp, lab)
    return colour.finish(xp, out, grey, alpha, img)


STEP = StepDef(
    "sharpen",
    "unsharp mask",
    {"sigma": number(0, 10, 1.0), "m1": number(0, 100, 1.0), "m2": number(0, 100, 2.0), "x1": number(0, 100, 2.0)},
    vips,
    array,
    shorthand="sigma",
)
