"""BlurHash (Wolt's placeholder format, https://blurha.sh): a few DCT components of the image in linear
light, quantised and written in base 83. Default 4x3 components, the format's own default."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
DEFAULT_COMPONENTS = (4, 3)


def _base83(value: int, length: int) -> str:
    return "".join(ALPHABET[(value // 83 ** (length - 1 - i)) % 83] for i in range(length))


_V = np.arange(256) / 255.0
_TO_LINEAR = np.where(_V <= 0.04045, _V / 12.92, ((_V + 0.055) / 1.055) ** 2.4)  # a lookup per 8-bit value


def _to_srgb(linear: float) -> int:
    v = min(1.0, max(0.0, linear))
    s = v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
    return math.floor(s * 255 + 0.5)


def _sign_pow(value: float, exp: float) -> float:
    return math.copysign(abs(value) ** exp, value)


def encode(rgb: npt.NDArray[np.uint8], components: tuple[int, int] = DEFAULT_COMPONENTS) -> str:
    """The BlurHash of an (h, w, 3) uint8 sRGB image with ``components`` (x, y), each 1 to 9."""
    cx, cy = components
    if not (1 <= cx <= 9 and 1 <= cy <= 9):
        raise ValueError("blurhash components must be 1 to 9")
    h, w = rgb.shape[:2]
    linear = _TO_LINEAR[rgb[..., :3]]
    fy = np.cos(math.pi * np.outer(np.arange(cy), np.arange(h)) / h)  # (cy, h)
    fx = np.cos(math.pi * np.outer(np.arange(cx), np.arange(w)) / w)  # (cx, w)
    # (cy, cx, 3): every component of every channel, then the AC ones doubled (the format's normalisation).
    comps = np.stack([fy @ linear[..., c] @ fx.T for c in range(3)], axis=2) / (w * h)
    comps[1:, :, :] *= 2
    comps[0, 1:, :] *= 2
    factors = [comps[j, i] for j in range(cy) for i in range(cx)]
    dc, ac = factors[0], factors[1:]
    out = _base83((cx - 1) + (cy - 1) * 9, 1)
    if ac:
        actual_max = float(max(np.abs(f).max() for f in ac))
        quantised = max(0, min(82, math.floor(actual_max * 166 - 0.5)))
        max_value = (quantised + 1) / 166
        out += _base83(quantised, 1)
    else:
        max_value = 1.0
        out += _base83(0, 1)
    out += _base83((_to_srgb(dc[0]) << 16) + (_to_srgb(dc[1]) << 8) + _to_srgb(dc[2]), 4)
    for f in ac:
        q = [max(0, min(18, math.floor(_sign_pow(float(v) / max_value, 0.5) * 9 + 9.5))) for v in f]
        out += _base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return out


def average_rgb(blurhash: str) -> tuple[int, int, int]:
    """The DC colour a BlurHash encodes (sRGB 0..255): characters 2-5, as a decoder reads them."""
    value = 0
    for ch in blurhash[2:6]:
        value = value * 83 + ALPHABET.index(ch)
    return (value >> 16, (value >> 8) & 255, value & 255)
