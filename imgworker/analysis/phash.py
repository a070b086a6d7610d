"""Perceptual hash: the imagehash package's ``phash`` maths (grey, 32x32, 2-D DCT-II, the top-left 8x8
terms against their median), as 16 hex digits. Near-duplicates differ in a few of the 64 bits."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

SIZE = 32  # hash_size 8 x highfreq_factor 4
_N = np.arange(SIZE)
# Unnormalised DCT-II matrix (scipy.fftpack.dct's default): a constant factor does not move the median.
_DCT = 2.0 * np.cos(math.pi * np.outer(_N, 2 * _N + 1) / (2 * SIZE))


def bits(grey32: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """The 8x8 hash bits of a 32x32 grey image (0..255)."""
    if grey32.shape != (SIZE, SIZE):
        raise ValueError(f"phash needs a {SIZE}x{SIZE} grey image, got {grey32.shape}")
    dct = _DCT @ grey32 @ _DCT.T  # along columns, then rows, like dct(dct(x, axis=0), axis=1)
    low = dct[:8, :8]
    return np.asarray(low > np.median(low))


def encode(grey32: npt.NDArray[np.float64]) -> str:
    """16 hex digits, first bit most significant (imagehash's ``str(phash(image))``)."""
    value = 0
    for bit in bits(grey32).flatten():
        value = value << 1 | int(bit)
    return f"{value:016x}"


def distance(a: str, b: str) -> int:
    """Hamming distance between two hashes: how many of the 64 bits differ."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
