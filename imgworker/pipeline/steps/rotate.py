"""rotate: by a multiple of 90 degrees (lossless), or any angle with the corners filled by a background.

Any other angle on the array executor is libvips' ``rotate`` (an affine with its bilinear interpolator):
each output pixel centre is mapped back into the source, sampled bilinearly from the image bordered by the
background, on an output the size of the rotated bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays import image as arrays
from imgworker.pipeline.steps.base import StepDef, colour, number


def _background(o: Mapping[str, Any], channels: int) -> tuple[float, ...]:
    # Transparent corners when there is alpha.
    return arrays.fill(o["background"], channels, alpha=0.0)


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    angle = o["angle"] % 360
    if angle == 0:
        return image
    if angle % 90 == 0:
        return image.rot(f"d{int(angle)}")
    bg = list(_background(o, image.bands))
    # libvips rotates anticlockwise for positive angles; sharp and CSS turn clockwise.
    return image.rotate(-angle, background=bg)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    angle = o["angle"] % 360
    if angle == 0:
        return img
    if angle % 90 == 0:
        return xp.ascontiguousarray(xp.rot90(img, k=-int(angle) // 90, axes=(0, 1)))
    return arrays.like(xp, _rotate_any(xp, arrays.as_float(xp, img), angle, _background(o, int(img.shape[2]))), img)


def _rotate_any(xp: Any, img: Any, angle: float, bg: tuple[float, ...]) -> Any:
    h, w, c = (int(s) for s in img.shape)
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    out_w = max(1, round(abs(w * cos) + abs(h * sin)))  # the rounded bounding box, as libvips
    out_h = max(1, round(abs(w * sin) + abs(h * cos)))
    # A one-pixel background border so samples near the edge blend into the background, as libvips does.
    framed = xp.empty((h + 2, w + 2, c), dtype=xp.float32)
    framed[...] = xp.asarray(bg, dtype=xp.float32)
    framed[1:-1, 1:-1] = img
    ys, xs = xp.meshgrid(xp.arange(out_h, dtype=xp.float32), xp.arange(out_w, dtype=xp.float32), indexing="ij")
    dx, dy = xs + 0.5 - out_w / 2, ys + 0.5 - out_h / 2
    # Clockwise on screen (y down): invert the rotation for each output pixel centre.
    sx = dx * cos - dy * sin + w / 2 - 0.5 + 1
    sy = dx * sin + dy * cos + h / 2 - 0.5 + 1
    x0, y0 = xp.floor(sx), xp.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    inside = (x0 >= 0) & (y0 >= 0) & (x0 < w + 1) & (y0 < h + 1)
    xi = xp.clip(x0, 0, w).astype(xp.int32)
    yi = xp.clip(y0, 0, h).astype(xp.int32)
    top = framed[yi, xi] * (1 - fx) + framed[yi, xi + 1] * fx
    bottom = framed[yi + 1, xi] * (1 - fx) + framed[yi + 1, xi + 1] * fx
    out = top * (1 - fy) + bottom * fy
    return xp.where(inside[..., None], out, xp.asarray(bg, dtype=xp.float32))


STEP = StepDef(
    "rotate",
    "turn clockwise by an angle",
    {"angle": number(-360, 360), "background": colour()},
    vips,
    array,
    shorthand="angle",
)
