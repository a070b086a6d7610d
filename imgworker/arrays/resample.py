"""Separable antialiased resampling written once against an array module ``xp`` (numpy or cupy).

Weights are *banded*: for each output pixel along an axis, a start index into the input and a fixed number
of tap weights (``Band``). That is O(out * taps) memory instead of a dense out x in matrix, and is the same
layout the CuPy RawKernels in kernels.py consume, so the numpy path here is the reference they are tested
against.

Shrinking follows libvips' reduce: output pixel ``i`` has its centre at input coordinate
``(i + 0.5) * scale - 0.5`` (``scale = in / out``) and the kernel is stretched by ``scale`` so it also
low-pass filters (antialiasing). Enlarging follows libvips' resize, which upsizes with its bicubic
(Catmull-Rom) interpolator at input coordinate ``i * scale - 0.5``: the CPU backend does that, so we do too
(measured: 52 dB against libvips this way, 34 dB with a centred Lanczos3). Edges repeat the border pixel;
each row of weights sums to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

KERNELS = ("lanczos3", "lanczos2", "mitchell", "cubic", "linear", "nearest", "area")

# Anything with numpy's array API (numpy, cupy): typed loosely because cupy ships no stubs.
XP = Any
Array = Any


@dataclass(frozen=True, slots=True)
class Band:
    """Banded weights for one axis: ``out[i] = sum_k weights[i, k] * in[starts[i] + k]``."""

    starts: npt.NDArray[np.int32]  # (out,)
    weights: npt.NDArray[np.float32]  # (out, taps), rows sum to 1

    @property
    def taps(self) -> int:
        return int(self.weights.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.weights.shape[0])


def _lanczos3(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a = 3.0
    out = np.sinc(x) * np.sinc(x / a)
    return np.where(np.abs(x) < a, out, 0.0)


def _linear(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _catmull_rom(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a, x = -0.5, np.abs(x)
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _lanczos2(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(np.abs(x) < 2.0, np.sinc(x) * np.sinc(x / 2.0), 0.0)


def _mitchell(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    b = c = 1.0 / 3.0
    x = np.abs(x)
    near = ((12 - 9 * b - 6 * c) * x**3 + (-18 + 12 * b + 6 * c) * x**2 + (6 - 2 * b)) / 6
    far = ((-b - 6 * c) * x**3 + (6 * b + 30 * c) * x**2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)) / 6
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _nearest(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where((x >= -0.5) & (x < 0.5), 1.0, 0.0)


# The pipeline's resize kernels (libvips' names); "cubic" is libvips' Catmull-Rom.
_SUPPORT = {"lanczos3": 3.0, "lanczos2": 2.0, "mitchell": 2.0, "linear": 1.0, "cubic": 2.0, "nearest": 0.5}
_FUNCS = {"lanczos3": _lanczos3, "lanczos2": _lanczos2, "mitchell": _mitchell, "linear": _linear,
          "cubic": _catmull_rom, "nearest": _nearest}


@lru_cache(maxsize=256)
def band(in_size: int, out_size: int, kernel: str = "lanczos3") -> Band:
    """Banded weights resampling ``in_size`` samples to ``out_size`` (cached: batches reuse sizes)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    scale = in_size / out_size
    i = np.arange(out_size, dtype=np.float64)
    if kernel == "area":
        # Exact box coverage: output pixel i covers [i*scale, (i+1)*scale) of the input.
        lo, hi = i * scale, (i + 1) * scale
        starts = np.floor(lo).astype(np.int64)
        taps = math.ceil(scale) + 1
        idx = starts[:, None] + np.arange(taps)[None, :]
        w = np.clip(np.minimum(idx + 1, hi[:, None]) - np.maximum(idx, lo[:, None]), 0.0, None)
    else:
        if scale < 1.0:
            # Enlarging: libvips' convention (see the module docstring); lanczos3 becomes its bicubic.
            kernel = "cubic" if kernel in ("lanczos3", "lanczos2", "mitchell") else kernel
            centre = i * scale - 0.5
        else:
            centre = (i + 0.5) * scale - 0.5
        # Widen the kernel when shrinking: that is the antialiasing (nearest picks one pixel, as libvips).
        stretch = 1.0 if kernel == "nearest" else max(scale, 1.0)
        support = _SUPPORT[kernel] * stretch
        starts = np.floor(centre - support).astype(np.int64) + 1
        taps = math.ceil(2 * support) + 1
        idx = starts[:, None] + np.arange(taps)[None, :]
        x = (idx - centre[:, None]) / stretch
        w = _FUNCS[kernel](x)
    return _fold_edges(in_size, starts, w)


def _fold_edges(in_size: int, starts: npt.NDArray[np.int64], w: npt.NDArray[np.float64]) -> Band:
    """Clamp taps to the image (edge repeat) and shift each band inside [0, in_size).

    Taps falling outside are added to the border pixel, so kernels never read out of bounds and need no
    per-tap bounds checks.
    """
    out_size, raw_taps = w.shape
    taps = min(raw_taps, in_size)
    shifted = np.clip(starts, 0, in_size - taps)
    folded = np.zeros((out_size, taps), dtype=np.float64)
    rows = np.arange(out_size)
    for k in range(raw_taps):
        pos = np.clip(starts + k, 0, in_size - 1) - shifted
        folded[rows, pos] += w[:, k]
    sums = folded.sum(axis=1, keepdims=True)
    # A Lanczos lobe can in theory sum to ~0 only for degenerate sizes; guard the division anyway.
    folded = np.where(np.abs(sums) > 1e-12, folded / np.where(sums == 0, 1, sums), 1.0 / taps)
    # Trim columns that are zero for every output (wide area/linear bands padded by one).
    while folded.shape[1] > 1 and not folded[:, -1].any():
        folded = folded[:, :-1]
    return Band(shifted.astype(np.int32), folded.astype(np.float32))


def apply_band(xp: XP, img: Array, b: Band, axis: int) -> Array:
    """Resample float32 ``img`` (H, W, C) along ``axis`` (0 rows, 1 columns) with gathers + weighted sum."""
    starts = xp.asarray(b.starts)
    weights = xp.asarray(b.weights)
    acc = None
    for k in range(b.taps):
        idx = starts + k
        # Gather the k-th tap of every output along the axis, weight it, accumulate.
        term = img[idx] * weights[:, k, None, None] if axis == 0 else img[:, idx] * weights[None, :, k, None]
        acc = term if acc is None else acc + term
    return acc


def resize(xp: XP, img: Array, out_w: int, out_h: int, kernel: str = "lanczos3") -> Array:
    """Resize a uint8 or float (H, W, C) image to (out_h, out_w, C) float32 (not yet rounded).

    The axis that shrinks most goes first so the second pass touches fewer pixels.
    """
    h, w = int(img.shape[0]), int(img.shape[1])
    x = img.astype(xp.float32, copy=False)
    passes = [(0, h, out_h), (1, w, out_w)]
    passes.sort(key=lambda p: p[2] / p[1])
    for axis, n_in, n_out in passes:
        if n_in != n_out:
            x = apply_band(xp, x, band(n_in, n_out, kernel), axis)
    return x


def to_uint8(xp: XP, img: Array) -> Array:
    return xp.clip(xp.rint(img), 0, 255).astype(xp.uint8)


def premultiply(xp: XP, img: Array) -> Array:
    """float32 RGBA / grey+alpha (alpha last) -> premultiplied, so transparent pixels don't bleed colour."""
    out = img.astype(xp.float32, copy=True)
    out[..., :-1] *= out[..., -1:] / 255.0
    return out


def unpremultiply(xp: XP, img: Array) -> Array:
    out = img.copy()
    alpha = out[..., -1:]
    safe = xp.where(alpha > 0, alpha, 1.0)
    out[..., :-1] = xp.where(alpha > 0, out[..., :-1] * (255.0 / safe), 0.0)
    return out


# --- Geometry helpers for fit modes and pipelines (all take and return (H, W, C) arrays). ---


def crop(img: Array, left: int, top: int, width: int, height: int) -> Array:
    return img[top : top + height, left : left + width]


def pad(xp: XP, img: Array, width: int, height: int, left: int, top: int, fill: tuple[int, ...]) -> Array:
    """Place ``img`` on a (height, width) canvas of ``fill`` (one value per channel) at (left, top)."""
    channels = int(img.shape[2])
    canvas = xp.empty((height, width, channels), dtype=img.dtype)
    canvas[...] = xp.asarray(fill[:channels], dtype=img.dtype)
    canvas[top : top + img.shape[0], left : left + img.shape[1]] = img
    return canvas


def flatten(xp: XP, img: Array, background: tuple[int, int, int]) -> Array:
    """Composite RGBA / grey+alpha (straight alpha, last) over an opaque ``background`` -> float32."""
    x = img.astype(xp.float32, copy=False)
    alpha = x[..., -1:] / 255.0
    colour = x[..., :-1]
    bg = xp.asarray(background[: colour.shape[-1]], dtype=xp.float32)
    return colour * alpha + bg * (1.0 - alpha)


def flip(xp: XP, img: Array, horizontal: bool = True) -> Array:
    return xp.flip(img, axis=1 if horizontal else 0)


def rotate90(xp: XP, img: Array, turns: int = 1) -> Array:
    """Rotate clockwise by ``turns`` quarter turns."""
    return xp.rot90(img, k=-turns, axes=(0, 1))
