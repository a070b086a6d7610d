"""The small image every pixel fact reads: the job's decoded image brought down to at most 100x100 RGBA
(ThumbHash's limit), plus the 32x32 grey image of the perceptual hash. Both come from the pixels the job
already decoded, by resampling in memory: no second decode of the source.

The resampling is NumPy on the copied-out pixels (a block mean, then a Lanczos matrix for the 32x32): on
images of a few hundred pixels each libvips operation costs a millisecond or more of thread start-up, which
is most of a thumbnail job's budget. Only a big decoded image (a pipeline that decodes at full size) or an
unusual colour space takes one libvips step first.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

from imgworker.analysis.phash import SIZE as PHASH_SIZE
from imgworker.analysis.thumbhash import MAX_SIDE

_NUMPY_MAX_SIDE = 800  # above this, libvips shrinks first (block means in NumPy cost O(pixels))


@dataclass(frozen=True, slots=True)
class Small:
    rgba: npt.NDArray[np.uint8]  # (h, w, 4), h and w <= 100
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


def _block_mean(arr: npt.NDArray[np.uint8], limit: int) -> npt.NDArray[np.uint8]:
    """Mean of k x k blocks, k the smallest integer that brings both sides to ``limit`` or less."""
    h, w, c = arr.shape
    k = math.ceil(max(h, w) / limit)
    if k <= 1:
        return arr
    hh, ww = max(1, h // k), max(1, w // k)
    # k slice additions per axis, rows then columns: ~3x faster than ndarray.sum over the block axes.
    acc_type: type[np.unsignedinteger[Any]] = np.uint16 if k <= 16 else np.uint32  # k*k*255 must fit
    rows = arr[: hh * k, : ww * k].reshape(hh, k, ww * k * c)
    acc: npt.NDArray[np.unsignedinteger[Any]] = rows[:, 0].astype(acc_type)
    for i in range(1, k):
        acc += rows[:, i]
    cols = acc.reshape(hh, ww, k, c)
    blocks: npt.NDArray[np.uint32] = cols[:, :, 0].astype(np.uint32)
    for i in range(1, k):
        blocks += cols[:, :, i]
    return ((blocks + k * k // 2) // (k * k)).astype(np.uint8)


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


def prepare(image: pyvips.Image, oriented: bool = True) -> Small:
    """``image`` (any colour space, in memory) as the facts' small image; turned upright unless ``oriented``."""
    image = first_frame(image)
    if not oriented:
        image = image.autorot()  # the job kept the stored orientation; the facts describe the picture as shown
    if max(image.width, image.height) > _NUMPY_MAX_SIDE:
        image = image.thumbnail_image(MAX_SIDE * 4, height=MAX_SIDE * 4, no_rotate=True)
    rgba = _rgba(_block_mean(_pixels(image), MAX_SIDE))
    # Pillow's "L" conversion (ITU-R 601-2 luma), then Lanczos to 32x32, as imagehash does.
    grey = rgba[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = grey.shape
    grey32 = _lanczos_matrix(h, PHASH_SIZE) @ grey @ _lanczos_matrix(w, PHASH_SIZE).T
    return Small(np.ascontiguousarray(rgba), np.clip(grey32, 0, 255))
