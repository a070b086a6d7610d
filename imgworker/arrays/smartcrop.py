"""libvips' smart crop (``vips_smartcrop``) on ``xp`` arrays: where a w x h window goes.

``attention`` (libvips >= 8.10): shrink to about 32 x 32 (lanczos3), then score each pixel by edges (Laplacian
of Y in XYZ, x5), skin colour (100 - 100 * distance of the normalised XYZ colour from smartcrop.js' skin
point, where Y > 5) and saturation (LCh chroma, where Y > 5); blur the sum by a sigma that follows the
window size and centre the window over the maximum. ``entropy``: cut slices off the less interesting side
(lower histogram entropy) in 8 steps until the window size is reached. Alpha is premultiplied first so
that content under transparency does not count.
"""

from __future__ import annotations

import math
from typing import Any

from imgworker.arrays import colour, filters, resample
from imgworker.arrays.image import as_float, split_alpha

XP = Any
Array = Any

_SKIN = (-0.78, -0.57, -0.44)
_LAPLACE = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))


def _rgb(xp: XP, img: Array) -> Array:
    """Premultiplied colour as float sRGB (grey repeated to three channels)."""
    rgb, alpha = split_alpha(as_float(xp, img))
    if alpha is not None:
        rgb = rgb * (alpha / 255.0)
    return colour.grey_to_rgb(xp, rgb) if int(rgb.shape[2]) == 1 else rgb


def attention(xp: XP, img: Array, width: int, height: int) -> tuple[int, int]:
    h, w = int(img.shape[0]), int(img.shape[1])
    hscale, vscale = 32.0 / w, 32.0 / h
    small = resample.resize(xp, _rgb(xp, img), max(1, round(w * hscale)), max(1, round(h * vscale)), "lanczos3")
    xyz = colour._mat(xp, colour.to_linear(xp, small), colour._M) * 100.0
    y = xyz[..., 1]
    edges = xp.abs(filters.convolve3(xp, y, _LAPLACE) * 5.0)
    norm = xp.sqrt((xyz ** 2).sum(axis=-1, keepdims=True))
    unit = xyz / xp.where(norm > 0, norm, 1.0)
    dist = xp.sqrt(((unit + xp.asarray(_SKIN, dtype=xp.float32)) ** 2).sum(axis=-1))
    lit = y > 5.0
    skin = xp.where(lit, 100.0 - 100.0 * dist, 0.0)
    chroma = colour.lab_to_lch(xp, colour.srgb_to_lab(xp, small))[..., 1]
    saturation = xp.where(lit, chroma, 0.0)
    score = (edges + skin + saturation)[..., None]
    sigma = max(math.sqrt((width * hscale) ** 2 + (height * vscale) ** 2) / 10, 1.0)
    score = filters.gaussblur(xp, score, sigma)
    flat = int(xp.argmax(score[..., 0]))
    y_pos, x_pos = divmod(flat, int(score.shape[1]))
    left = min(max(0, int(x_pos / hscale - width / 2)), w - width)
    top = min(max(0, int(y_pos / vscale - height / 2)), h - height)
    return left, top


def _entropy(xp: XP, region: Array) -> float:
    """Entropy of the region's 8-bit histograms (all bands together): -sum p log2 p."""
    values = xp.clip(xp.rint(region), 0, 255).astype(xp.int32).reshape(-1, int(region.shape[2]))
    offsets = xp.arange(int(region.shape[2]), dtype=xp.int32) * 256
    hist = xp.bincount((values + offsets).ravel(), minlength=256 * int(region.shape[2])).astype(xp.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * xp.log2(p)).sum())


def entropy(xp: XP, img: Array, width: int, height: int) -> tuple[int, int]:
    colour_, alpha = split_alpha(as_float(xp, img))
    # libvips scores the premultiplied bands, alpha included.
    rgb = xp.concatenate([colour_ * (alpha / 255.0), alpha], axis=2) if alpha is not None else colour_
    left = top = 0
    w, h = int(img.shape[1]), int(img.shape[0])
    step = max(math.ceil((w - width) / 8.0), math.ceil((h - height) / 8.0))
    while w > width or h > height:
        sw, sh = min(w - width, step), min(h - height, step)
        if sw > 0:
            a = _entropy(xp, rgb[top : top + h, left : left + sw])
            b = _entropy(xp, rgb[top : top + h, left + w - sw : left + w])
            w -= sw
            if a < b:
                left += sw
        if sh > 0:
            a = _entropy(xp, rgb[top : top + sh, left : left + w])
            b = _entropy(xp, rgb[top + h - sh : top + h, left : left + w])
            h -= sh
            if a < b:
                top += sh
    return left, top
