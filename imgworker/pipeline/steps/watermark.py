"""watermark: composite an image read from a store (``src``) at a gravity, scaled and with an opacity.

The mark is decoded (and scaled) on the CPU, once per job and size; the array executor composites it
with the Porter-Duff "over" of libvips' ``composite2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import colour
from imgworker.arrays import image as arrays
from imgworker.core.errors import BadRequest, ImgworkerError
from imgworker.core.limits import Limits
from imgworker.imaging.probe import probe
from imgworker.pipeline.steps.base import GRAVITIES, Opt, StepDef, choice, number
from imgworker.pipeline.steps.gravity import offsets


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


def _place(o: Mapping[str, Any], width: int, height: int, mark_w: int, mark_h: int) -> tuple[int, int]:
    margin = round(width * o["margin"])
    x, y = offsets(o["gravity"], max(0, width - mark_w - 2 * margin), max(0, height - mark_h - 2 * margin))
    return x + margin, y + margin


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["opacity"] <= 0:
        return image
    width = max(1, round(image.width * o["scale"]))
    mark = _overlay(ctx.read(o["src"]), width, o["opacity"], ctx.limits)
    x, y = _place(o, image.width, image.height, mark.width, mark.height)
    had_alpha, grey = image.hasalpha(), image.interpretation == "b-w"
    base = image.colourspace("srgb") if grey else image
    out = base.composite2(mark, "over", x=x, y=y).cast("uchar")
    if grey:
        out = out.colourspace("b-w")
    return out if had_alpha else out.extract_band(0, n=out.bands - 1)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    if o["opacity"] <= 0:
        return img
    h, w = int(img.shape[0]), int(img.shape[1])
    mark = arrays.upload(xp, arrays.from_vips(_overlay(ctx.read(o["src"]), max(1, round(w * o["scale"])),
                                                       o["opacity"], ctx.limits))).astype(xp.float32)
    x, y = _place(o, w, h, int(mark.shape[1]), int(mark.shape[0]))
    mark = mark[: max(0, h - y), : max(0, w - x)]  # libvips clips a mark that runs off the image
    mh, mw = int(mark.shape[0]), int(mark.shape[1])
    if mh == 0 or mw == 0:
        return img
    base, alpha = arrays.split_alpha(arrays.as_float(xp, img))
    grey = int(base.shape[2]) == 1
    rgb = colour.grey_to_rgb(xp, base) if grey else base
    out = rgb.copy()
    region = out[y : y + mh, x : x + mw]
    ma = mark[..., 3:] / 255.0
    if alpha is None:
        out[y : y + mh, x : x + mw] = mark[..., :3] * ma + region * (1.0 - ma)
        new_alpha = None
    else:
        ba = alpha[y : y + mh, x : x + mw] / 255.0
        oa = ma + ba * (1.0 - ma)
        safe = xp.where(oa > 0, oa, 1.0)
        out[y : y + mh, x : x + mw] = (mark[..., :3] * ma + region * ba * (1.0 - ma)) / safe
        new_alpha = alpha.copy()
        new_alpha[y : y + mh, x : x + mw] = oa * 255.0
    return colour.finish(xp, out, grey, new_alpha, img)


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
    vips,
    array,
)
