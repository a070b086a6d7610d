"""Colour conversions on ``xp`` arrays with libvips' formulas (sRGB, D65 white, CIE Lab / LCh).

Inputs and outputs are float32; sRGB is 0-255, Lab has L 0-100. The steps use them for sharpen (lightness),
modulate (LCh), grayscale (luminance) and smart crop; libvips does the same conversions, so the round trip
sRGB -> Lab -> sRGB is the identity up to float error and only the step's own change differs.
"""

from __future__ import annotations

from typing import Any

from imgworker.arrays import image as arrays

XP = Any
Array = Any

# sRGB primaries -> XYZ (D65), scaled so Y of white is 100, as libvips' scRGB2XYZ.
_M = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
_MINV = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
WHITE = (95.047, 100.0, 108.883)
LUMA = (0.2126, 0.7152, 0.0722)


def to_linear(xp: XP, srgb: Array) -> Array:
    """sRGB 0-255 -> linear light 0-1."""
    v = srgb.astype(xp.float32) / 255.0
    return xp.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(xp.float32)


def from_linear(xp: XP, lin: Array) -> Array:
    """linear light 0-1 -> sRGB 0-255 (float, unclipped above/below by at most float error)."""
    v = xp.clip(lin, 0.0, 1.0)
    return (255.0 * xp.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)).astype(xp.float32)


def _mat(xp: XP, img: Array, m: tuple[tuple[float, float, float], ...]) -> Array:
    return xp.stack([img[..., 0] * r[0] + img[..., 1] * r[1] + img[..., 2] * r[2] for r in m], axis=-1)


def srgb_to_lab(xp: XP, srgb: Array) -> Array:
    xyz = _mat(xp, to_linear(xp, srgb), _M) * 100.0
    f = [_f(xp, xyz[..., i] / WHITE[i]) for i in range(3)]
    return xp.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])], axis=-1).astype(xp.float32)


def lab_to_srgb(xp: XP, lab: Array) -> Array:
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = xp.stack([_finv(xp, f) * WHITE[i] for i, f in enumerate((fx, fy, fz))], axis=-1) / 100.0
    return from_linear(xp, _mat(xp, xyz, _MINV))


def _f(xp: XP, t: Array) -> Array:
    return xp.where(t > 216 / 24389, xp.cbrt(t), (24389 / 27 * t + 16) / 116)


def _finv(xp: XP, f: Array) -> Array:
    return xp.where(f ** 3 > 216 / 24389, f ** 3, (116 * f - 16) / (24389 / 27))


def lab_to_lch(xp: XP, lab: Array) -> Array:
    c = xp.sqrt(lab[..., 1] ** 2 + lab[..., 2] ** 2)
    h = xp.degrees(xp.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return xp.stack([lab[..., 0], c, h], axis=-1)


def lch_to_lab(xp: XP, lch: Array) -> Array:
    h = xp.radians(lch[..., 2])
    return xp.stack([lch[..., 0], lch[..., 1] * xp.cos(h), lch[..., 1] * xp.sin(h)], axis=-1)


def luminance(xp: XP, srgb: Array) -> Array:
    """libvips' sRGB -> b-w: Y of the linear values, gamma-encoded again; (H, W, 1) float 0-255."""
    lin = to_linear(xp, srgb)
    y = lin[..., 0] * LUMA[0] + lin[..., 1] * LUMA[1] + lin[..., 2] * LUMA[2]
    return from_linear(xp, y)[..., None]


def grey_to_rgb(xp: XP, grey: Array) -> Array:
    return xp.concatenate([grey, grey, grey], axis=2)


def finish(xp: XP, rgb: Array, grey: bool, alpha: Array | None, source: Array) -> Array:
    """A step that worked on sRGB: back to grey when its input was grey, alpha re-joined, in the input's dtype."""
    out = luminance(xp, rgb) if grey else rgb
    return arrays.like(xp, arrays.join_alpha(xp, out, alpha), source)
