"""The small image every pixel fact reads: the picture reduced to a fixed grid (``GRID`` px on its longer side,
an exact area mean in sRGB values) plus the 32x32 grey image of the perceptual hash. It comes from the pixels
the job already decoded, by resampling in memory: no second decode of the source.

The grid does not follow the job's decode scale (issue 27): a JPEG decoded at 1/8 scale is itself a mean of
8x8 blocks, and a mean of means over the same cell is the same mean, so the CPU worker's decode for a 256 px or
a 2048 px job and the array worker's small decode (source.py) give the same grid up to rounding, and the facts
agree (tests/unit/analysis/test_facts_agree.py). The mean is taken in sRGB values, not linear light, because
that is what a decoder's shrink-on-load does.

The resampling is NumPy on the copied-out pixels (two area-weight matrices): on images of a few hundred pixels
each libvips operation costs a millisecond or more of thread start-up, which is most of a thumbnail job's
budget. Only a big decoded image (a pipeline that decodes at full size) takes one libvips integer box shrink
first, and an unusual colour space one conversion.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

from imgworker.analysis.phash import SIZE as PHASH_SIZE

GRID = 64  # the facts' image: longer side in px (ThumbHash takes up to 100; smaller is steadier across scales)
_NUMPY_MAX_SIDE = 800  # above this, libvips box-shrinks first (area means in NumPy cost O(pixels))


@dataclass(frozen=True, slots=True)
class Small:
    rgba: npt.NDArray[np.uint8]  # (h, w, 4), the longer side GRID
    grey32: npt.NDArray[np.float64]  # (32, 32), 0..255

    @property
    def rgb(self) -> npt.NDArray[np.uint8]:
        return self.rgba[..., :3]


def first_frame(image: pyvips.Image) -> pyvips.Image:
    """An animation is decoded as a tall strip of frames: the facts describe the first."""
    fields = image.get_fields()
    page_height = image.get("page-height") if "page-height" in fields else image.height
    return image.crop(0, 0, image.width, page_height) if 0 < page_height < image.height else image


def _pixels(image: pyvips.Image) -> npt.NDArray[np.uint8]:
    """(h, w, c) uint8: sRGB (c 3, 4) or grey (c 1, 2); libvips converts only other colour spaces/depths."""
    simple = image.format == "uchar" and (
        (image.interpretation == "srgb" and image.bands in (3, 4)) or (image.bands in (1, 2)
                                                                       and image.interpretation == "b-w"))
    if not simple:
        image = image.colourspace("srgb")
        image = image.cast("uchar") if image.format != "uchar" else image
        image = image[0:4] if image.bands > 4 else image
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))


def _rgba(arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if arr.shape[2] in (1, 2):  # grey (+ alpha)
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], axis=2)
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full((*arr.shape[:2], 1), 255, np.uint8)], axis=2)
    return arr


def _area_axis(arr: npt.NDArray[Any], size_out: int, axis: int) -> npt.NDArray[np.float64]:
    """Exact area means of ``size_out`` equal spans along ``axis``: whole pixels summed by row additions (no
    BLAS, whose threads fight for a busy machine's cores), the pixels cut by a span's fractional edges weighted."""
    arr = np.moveaxis(arr, axis, 0)
    n = arr.shape[0]
    if n < size_out:  # fewer pixels than spans: each pixel as size_out copies, then spans of n copies
        copies = np.repeat(arr.astype(np.float64), size_out, axis=0)
        return np.moveaxis(copies.reshape(size_out, n, *arr.shape[1:]).mean(axis=1), 0, axis)
    edges = np.arange(size_out + 1) * n / size_out  # k*n exact, so the last edge is n itself
    base = edges.astype(np.intp)
    frac = (edges - base).reshape(-1, *[1] * (arr.ndim - 1))
    # Whole pixels [base_k, base_k+1): the j-th row of every span added at once, j up to the longest span (a
    # dozen or so block additions; reduceat along a leading axis is several times slower).
    first, spans = base[:-1], np.diff(base)
    exact = np.uint16 if spans.max() <= 257 else np.uint32  # 257 x 255 fits 16 bits
    whole = np.zeros((size_out, *arr.shape[1:]), exact if arr.dtype == np.uint8 else np.float64)
    for j in range(int(spans.min())):  # every span has this row
        whole += arr[first + j]
    for j in range(int(spans.min()), int(spans.max())):  # spans differ by one row at most, bar rounding
        longer = np.flatnonzero(spans > j)
        whole[longer] += arr[first[longer] + j]
    cut = arr[np.minimum(base, n - 1)].astype(np.float64) * frac  # frac is 0 where base is n
    return np.moveaxis((whole.astype(np.float64) - cut[:-1] + cut[1:]) * (size_out / n), 0, axis)


def grid_size(width: int, height: int) -> tuple[int, int]:
    """The facts' grid for a picture of this aspect: GRID on the longer side."""
    if width >= height:
        return GRID, max(1, round(GRID * height / width))
    return max(1, round(GRID * width / height)), GRID


def _area_mean(arr: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    out = _area_axis(_area_axis(arr, height, 0), width, 1)  # rows first: the second pass reads a short array
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _lanczos(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


@functools.lru_cache(maxsize=256)
def _lanczos_matrix(size_in: int, size_out: int) -> npt.NDArray[np.float64]:
    """(size_out, size_in) Lanczos-3 resampling weights, support widened when shrinking (Pillow's rule)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out) + 0.5) * scale
    weights = _lanczos((np.arange(size_in)[None, :] + 0.5 - centres[:, None]) / support)
    return weights / weights.sum(axis=1, keepdims=True)


def prepare(image: pyvips.Image, oriented: bool = True, shown: tuple[int, int] | None = None) -> Small:
    """``image`` (any colour space, in memory) as the facts' small image; turned upright unless ``oriented``.
    ``shown``: the picture's upright size where known (the grid's aspect then does not follow decode rounding)."""
    image = first_frame(image)
    if not oriented:
        image = image.autorot()  # the job kept the stored orientation; the facts describe the picture as shown
    width, height = grid_size(*(shown or (image.width, image.height)))
    k = min(image.width // (4 * width), image.height // (4 * height))
    if max(image.width, image.height) > _NUMPY_MAX_SIDE and k > 1:
        image = image.shrink(k, k)  # an integer box: the area mean below stays an area mean of the source
    rgba = _rgba(_area_mean(_pixels(image), width, height))
    # Pillow's "L" conversion (ITU-R 601-2 luma), then Lanczos to 32x32, as imagehash does.
    grey = rgba[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = grey.shape
    grey32 = _lanczos_matrix(h, PHASH_SIZE) @ grey @ _lanczos_matrix(w, PHASH_SIZE).T
    return Small(np.ascontiguousarray(rgba), np.clip(grey32, 0, 255))
