"""ThumbHash (Evan Wallace's placeholder format, https://evanw.github.io/thumbhash/), encoded with NumPy.

The image (at most 100x100, RGBA) becomes an L (luminance), P (yellow-blue), Q (red-green) and A (alpha)
channel composited over its own average colour; each channel's low DCT terms are quantised into a few
bytes: a 24-bit and a 16-bit header (DC terms, scales, shape), then 4-bit AC terms two to a byte.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
MAX_SIDE = 100


def _round(value: float) -> int:
    # The reference rounds half up (JavaScript's Math.round), not to even like Python's round().
    return math.floor(value + 0.5)


def _terms(nx: int, ny: int) -> list[tuple[int, int]]:
    """The (cx, cy) DCT terms a channel keeps: a triangle of the nx x ny grid, DC first."""
    return [(cx, cy) for cy in range(ny) for cx in range(nx) if cx * ny < nx * (ny - cy)]


def _encode_channel(channel: Floats, nx: int, ny: int) -> tuple[float, list[float], float]:
    """DC term, AC terms normalised to 0..1, and their scale (the largest |AC|)."""
    h, w = channel.shape
    fx = np.cos(math.pi / w * np.outer(np.arange(nx), np.arange(w) + 0.5))  # (nx, w)
    fy = np.cos(math.pi / h * np.outer(np.arange(ny), np.arange(h) + 0.5))  # (ny, h)
    coeffs = fy @ channel @ fx.T / (w * h)  # every (cy, cx) term at once; the triangle is kept below
    terms = [float(coeffs[cy, cx]) for cx, cy in _terms(nx, ny)]
    dc, ac = terms[0], terms[1:]
    scale = max((abs(f) for f in ac), default=0.0)
    if scale > 0:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return dc, ac, scale


def encode(rgba: npt.NDArray[np.uint8]) -> bytes:
    """The ThumbHash bytes of an (h, w, 4) uint8 RGBA image, h and w at most 100 (not premultiplied)."""
    h, w = rgba.shape[:2]
    if w > MAX_SIDE or h > MAX_SIDE or rgba.shape[2] != 4:
        raise ValueError(f"thumbhash needs RGBA of at most {MAX_SIDE}x{MAX_SIDE}, got {rgba.shape}")
    px = rgba.astype(np.float64) / 255.0
    alpha = px[..., 3]
    total_a = float(alpha.sum())
    avg = (px[..., :3] * alpha[..., None]).sum(axis=(0, 1)) / total_a if total_a > 0 else np.zeros(3)
    has_alpha = total_a < w * h
    l_limit = 5 if has_alpha else 7  # fewer luminance terms when alpha takes space
    lx = max(1, _round(l_limit * w / max(w, h)))
    ly = max(1, _round(l_limit * h / max(w, h)))
    rgb = avg * (1.0 - alpha[..., None]) + px[..., :3] * alpha[..., None]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    l_dc, l_ac, l_scale = _encode_channel((r + g + b) / 3.0, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _encode_channel((r + g) / 2.0 - b, 3, 3)
    q_dc, q_ac, q_scale = _encode_channel(r - g, 3, 3)
    landscape = w > h
    header24 = (_round(63 * l_dc) | _round(31.5 + 31.5 * p_dc) << 6 | _round(31.5 + 31.5 * q_dc) << 12
                | _round(31 * l_scale) << 18 | int(has_alpha) << 23)
    header16 = ((ly if landscape else lx) | _round(63 * p_scale) << 3 | _round(63 * q_scale) << 9
                | int(landscape) << 15)
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    acs = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = _encode_channel(alpha, 5, 5)
        out.append(_round(15 * a_dc) | _round(15 * a_scale) << 4)
        acs.append(a_ac)
    nibbles = [_round(15 * f) for ac in acs for f in ac]
    nibbles += [0] * (len(nibbles) % 2)
    out += [lo | hi << 4 for lo, hi in zip(nibbles[0::2], nibbles[1::2], strict=True)]
    return bytes(out)


def encode_base64(rgba: npt.NDArray[np.uint8]) -> str:
    return base64.b64encode(encode(rgba)).decode("ascii")


def average_rgba(hash_bytes: bytes) -> tuple[float, float, float, float]:
    """The average colour a ThumbHash encodes (0..1 each): its DC terms, as a decoder reads them."""
    header = hash_bytes[0] | hash_bytes[1] << 8 | hash_bytes[2] << 16
    lum = (header & 63) / 63.0
    p = ((header >> 6) & 63) / 31.5 - 1.0
    q = ((header >> 12) & 63) / 31.5 - 1.0
    a = (hash_bytes[5] & 15) / 15.0 if header >> 23 else 1.0
    b = lum - 2.0 / 3.0 * p
    r = (3.0 * lum - b + q) / 2.0
    g = r - q
    return (min(1.0, max(0.0, r)), min(1.0, max(0.0, g)), min(1.0, max(0.0, b)), a)
