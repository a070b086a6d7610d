"""resize: sharp's fit modes (inside, outside, cover, contain, fill), kernel, without_enlargement, dpr.

The array executor resamples with imgworker/arrays/resample.py's banded kernels (the CuPy RawKernels
of kernels.py on the GPU), premultiplied when there is alpha, as libvips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.arrays import resample as banded
from imgworker.core.contract import FITS
from imgworker.core.geometry import Geometry, plan
from imgworker.imaging.geometry import pad
from imgworker.pipeline.steps import gravity
from imgworker.pipeline.steps.base import KERNELS, StepDef, choice, colour, flag, integer, number

SIDE = 16_384


def target(w: int, h: int, o: Mapping[str, Any], limits: Any) -> Geometry | None:
    """The geometry this resize gives a w x h image, or None when it leaves the image as it is."""
    dpr = o["dpr"]
    width = None if o["width"] is None else round(o["width"] * dpr)
    height = None if o["height"] is None else round(o["height"] * dpr)
    if width is None and height is None:
        return None
    geo = plan(w, h, width, height, o["fit"], limits)
    if o["without_enlargement"] and (geo.resize_w > w or geo.resize_h > h):
        return None
    return geo


def resample(image: pyvips.Image, w: int, h: int, kernel: str) -> pyvips.Image:
    if (w, h) == (image.width, image.height):
        return image
    alpha = image.hasalpha()
    fmt = image.format
    if alpha:  # premultiply so transparent pixels do not bleed their colour into the edges
        image = image.premultiply()
    image = image.resize(w / image.width, vscale=h / image.height, kernel=kernel)
    if alpha:
        image = image.unpremultiply().cast(fmt)
    if (image.width, image.height) != (w, h):  # float rounding in vips_resize: make it exact
        image = image.gravity("centre", w, h, extend="copy")
    return image


def resample_array(xp: Any, img: Any, w: int, h: int, kernel: str, kernels: Any = None) -> Any:
    """The array executor's resample; ``kernels`` (CuPy RawKernels, kernels.py) when on the GPU."""
    if (w, h) == (int(img.shape[1]), int(img.shape[0])):
        return img
    alpha = arrays.has_alpha(img)
    x = banded.premultiply(xp, img) if alpha else img
    if kernels is not None:
        x = kernels.resize(xp, xp.ascontiguousarray(x), w, h, kernel, xp.float32)
    else:
        x = banded.resize(xp, x, w, h, kernel)
    if alpha:
        x = banded.unpremultiply(xp, x)
    return arrays.like(xp, x, img)


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    geo = target(image.width, image.height, o, ctx.limits)
    if geo is None:
        return image
    image = resample(image, geo.resize_w, geo.resize_h, o["kernel"])
    if geo.crops:
        return gravity.crop(image, geo.final_w, geo.final_h, o["position"], ctx)
    if geo.pads:
        if ctx is not None:
            ctx.view = None  # borders that are not the source's
        return pad(image, geo, o["background"])
    return image


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    geo = target(int(img.shape[1]), int(img.shape[0]), o, ctx.limits)
    if geo is None:
        return img
    img = resample_array(xp, img, geo.resize_w, geo.resize_h, o["kernel"], getattr(ctx, "kernels", None))
    if geo.crops:
        return gravity.crop_array(xp, img, geo.final_w, geo.final_h, o["position"], ctx)
    if geo.pads:
        if ctx is not None:
            ctx.view = None  # borders that are not the source's
        fill = tuple(int(v) for v in arrays.fill(o["background"], int(img.shape[2])))
        return banded.pad(xp, img, geo.final_w, geo.final_h, geo.pad_left, geo.pad_top, fill)
    return img


STEP = StepDef(
    "resize",
    "scale to width/height with a fit mode",
    {
        "width": integer(1, SIDE, None),
        "height": integer(1, SIDE, None),
        "fit": choice(FITS, "inside"),
        "position": choice(gravity.POSITIONS, "centre"),
        "kernel": choice(KERNELS, "lanczos3"),
        "without_enlargement": flag(False),
        "dpr": number(1, 4, 1.0),
        "background": colour(),
    },
    vips,
    array,
)
