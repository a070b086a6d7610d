"""resize: sharp's fit modes (inside, outside, cover, contain, fill), kernel, without_enlargement, dpr."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from ...contract import FITS
from ...geometry import Geometry, plan
from . import gravity
from .base import KERNELS, StepDef, choice, colour, flag, integer, number

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


def pad(image: pyvips.Image, geo: Geometry, background: tuple[int, int, int]) -> pyvips.Image:
    bg: list[float] = list(background) if image.bands >= 3 else [float(background[0])]
    if image.hasalpha():
        bg.append(255.0)
    return image.embed(geo.pad_left, geo.pad_top, geo.final_w, geo.final_h, extend="background", background=bg)


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    geo = target(image.width, image.height, o, ctx.limits)
    if geo is None:
        return image
    image = resample(image, geo.resize_w, geo.resize_h, o["kernel"])
    if geo.crops:
        return gravity.crop(image, geo.final_w, geo.final_h, o["position"], ctx)
    if geo.pads:
        return pad(image, geo, o["background"])
    return image


def _gpu(o: Mapping[str, Any]) -> str | None:
    return f"position {o['position']!r} (smart crop) runs on cpu only" if o["position"] in gravity.SMART else None


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
    apply,
    backends=("cpu", "gpu"),
    gpu_refuses=_gpu,
)
