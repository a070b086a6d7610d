"""extend: add padding on each side, filled with a background colour or copied/mirrored edges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, choice, colour, integer

MODES = ("background", "copy", "mirror", "repeat")
# libvips' embed modes as numpy/cupy pad modes ("mirror" repeats the edge pixel: numpy's "symmetric").
_PAD_MODES = {"copy": "edge", "mirror": "symmetric", "repeat": "wrap"}


def _sides(o: Mapping[str, Any]) -> tuple[int, int, int, int]:
    return o["top"], o["right"], o["bottom"], o["left"]


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    top, right, bottom, left = _sides(o)
    if not (top or right or bottom or left):
        return image
    bg: list[float] = list(o["background"]) if image.bands >= 3 else [float(o["background"][0])]
    if image.hasalpha():
        bg.append(255.0)
    w, h = image.width + left + right, image.height + top + bottom
    return image.embed(left, top, w, h, extend=o["mode"], background=bg)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    top, right, bottom, left = _sides(o)
    if not (top or right or bottom or left):
        return img
    pad = ((top, bottom), (left, right), (0, 0))
    if o["mode"] == "background":
        channels = int(img.shape[2])
        out = xp.empty((img.shape[0] + top + bottom, img.shape[1] + left + right, channels), dtype=img.dtype)
        out[...] = xp.asarray(arrays.fill(o["background"], channels), dtype=img.dtype)
        out[top : top + img.shape[0], left : left + img.shape[1]] = img
        return out
    return xp.pad(img, pad, mode=_PAD_MODES[o["mode"]])


STEP = StepDef(
    "extend",
    "pad the edges",
    {
        "top": integer(0, 4096, 0),
        "right": integer(0, 4096, 0),
        "bottom": integer(0, 4096, 0),
        "left": integer(0, 4096, 0),
        "background": colour(),
        "mode": choice(MODES, "background"),
    },
    vips,
    array,
)
