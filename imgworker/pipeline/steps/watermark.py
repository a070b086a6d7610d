"""watermark: composite an image read from a store (``src``) at a gravity, scaled and with an opacity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from ...backends.cpu import probe
from ...errors import BadRequest, ImgworkerError
from ...limits import Limits
from .base import GRAVITIES, Opt, StepDef, choice, number
from .gravity import offsets


def _overlay(data: bytes, width: int, opacity: float, limits: Limits) -> pyvips.Image:
    # The same header checks as a job's source (pixel limit, allowed formats) before a pixel is decoded:
    # a 10^10-pixel PNG bomb as the watermark must not cost gigabytes.
    try:
        probe(data, limits)
    except ImgworkerError as exc:
        raise type(exc)(f"the watermark image: {exc.message}", retryable=exc.retryable) from None
    try:
        mark = pyvips.Image.thumbnail_buffer(data, width, option_string="fail_on=warning")
    except pyvips.Error as exc:
        raise BadRequest(f"the watermark image could not be decoded: {exc.message}") from None
    mark = mark.colourspace("srgb") if mark.interpretation != "srgb" else mark
    if not mark.hasalpha():
        mark = mark.bandjoin(255)
    if opacity < 1:
        mark = mark.extract_band(0, n=3).bandjoin(mark[3] * opacity).cast("uchar")
    return mark


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["opacity"] <= 0:
        return image
    width = max(1, round(image.width * o["scale"]))
    mark = _overlay(ctx.read(o["src"]), width, o["opacity"], ctx.limits)
    margin = round(image.width * o["margin"])
    free_w = max(0, image.width - mark.width - 2 * margin)
    free_h = max(0, image.height - mark.height - 2 * margin)
    x, y = offsets(o["gravity"], free_w, free_h)
    had_alpha, grey = image.hasalpha(), image.interpretation == "b-w"
    base = image.colourspace("srgb") if grey else image
    out = base.composite2(mark, "over", x=x + margin, y=y + margin).cast("uchar")
    if grey:
        out = out.colourspace("b-w")
    return out if had_alpha else out.extract_band(0, n=out.bands - 1)


STEP = StepDef(
    "watermark",
    "overlay an image from a store",
    {
        "src": Opt("str"),
        "gravity": choice(GRAVITIES, "southeast"),
        "opacity": number(0, 1, 0.5),
        "scale": number(0.01, 1, 0.25),
        "margin": number(0, 0.5, 0.02),
    },
    apply,
)
