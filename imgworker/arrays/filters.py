"""libvips' convolution building blocks on ``xp`` arrays: the Gaussian mask of ``vips_gaussmat`` (integer
precision: coefficients ``rint(20 * exp(-x^2 / 2 sigma^2))`` while above ``min_ampl``), a separable
convolution whose edges repeat the border pixel (libvips' ``extend=copy``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

XP = Any
Array = Any


@lru_cache(maxsize=64)
def gauss_mask(sigma: float, min_ampl: float = 0.2) -> npt.NDArray[np.float32]:
    """The 1-D mask libvips' gaussblur (min_ampl 0.2) and sharpen (0.1) use, normalised to sum 1."""
    sig2 = 2.0 * sigma * sigma
    x = 0
    while x < 10_000 and math.exp(-(x * x) / sig2) >= min_ampl:
        x += 1
    width = max(1, 2 * x - 1)
    offs = np.arange(width, dtype=np.float64) - width // 2
    weights = np.rint(20.0 * np.exp(-(offs * offs) / sig2))
    if weights.sum() <= 0:
        weights = np.ones(1)
    return (weights / weights.sum()).astype(np.float32)


def convolve_axis(xp: XP, img: Array, mask: npt.NDArray[np.float32], axis: int) -> Array:
    """Convolve float (H, W, C) ``img`` along ``axis`` with a symmetric ``mask``; edges repeat."""
    r = len(mask) // 2
    if r == 0:
        return img.astype(xp.float32) * float(mask[0])
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    padded = xp.pad(img.astype(xp.float32, copy=False), pad, mode="edge")
    n = int(img.shape[axis])
    acc = None
    for k, w in enumerate(mask.tolist()):
        part = padded[k : k + n] if axis == 0 else padded[:, k : k + n]
        acc = part * w if acc is None else acc + part * w
    return acc


def gaussblur(xp: XP, img: Array, sigma: float, min_ampl: float = 0.2) -> Array:
    """Separable Gaussian blur (float32 out), libvips' gaussblur mask."""
    mask = gauss_mask(float(sigma), float(min_ampl))
    return convolve_axis(xp, convolve_axis(xp, img, mask, 0), mask, 1)
