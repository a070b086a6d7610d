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


def _to_linear(srgb: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    v = srgb / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


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
    linear = _to_linear(rgb[..., :3].astype(np.float64))
    factors: list[npt.NDArray[np.float64]] = []
    for j in range(cy):
        fy = np.cos(math.pi * j * np.arange(h) / h)
        for i in range(cx):
            fx = np.cos(math.pi * i * np.arange(w) / w)
            norm = 1.0 if i == 0 and j == 0 else 2.0
            basis = norm * np.outer(fy, fx)
            factors.append(np.einsum("hw,hwc->c", basis, linear) / (w * h))
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
