"""The array executor's image: an ``xp`` array of shape (H, W, C), C = 1 (grey), 2 (grey + alpha), 3 (sRGB)
or 4 (sRGB + alpha), alpha last, values 0-255 as uint8 or float32 (a float step leaves its result unrounded;
``to_uint8`` rounds once, before encoding). Animations are the frames stacked vertically, as libvips does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

XP = Any  # numpy or cupy (cupy ships no stubs)
Array = Any

_INTERPRETATION = {1: "b-w", 2: "b-w", 3: "srgb", 4: "srgb"}


def has_alpha(img: Array) -> bool:
    return int(img.shape[2]) in (2, 4)


def split_alpha(img: Array) -> tuple[Array, Array | None]:
    """(colour channels, alpha channel or None), both (H, W, n)."""
    if has_alpha(img):
        return img[..., :-1], img[..., -1:]
    return img, None


def join_alpha(xp: XP, colour: Array, alpha: Array | None) -> Array:
    if alpha is None:
        return colour
    return xp.concatenate([colour.astype(xp.float32, copy=False), alpha.astype(xp.float32, copy=False)], axis=2)


def to_uint8(xp: XP, img: Array) -> Array:
    if img.dtype == xp.uint8:
        return img
    return xp.clip(xp.rint(img), 0, 255).astype(xp.uint8)


def as_float(xp: XP, img: Array) -> Array:
    return img.astype(xp.float32, copy=False)


def like(xp: XP, result: Array, source: Array) -> Array:
    """``result`` in ``source``'s dtype (rounded for uint8): steps keep the dtype they were given."""
    return to_uint8(xp, result) if source.dtype == xp.uint8 else result.astype(xp.float32, copy=False)


def from_vips(image: pyvips.Image) -> npt.NDArray[Any]:
    """A decoded libvips image (8-bit sRGB or grey, +alpha) as a host (H, W, C) uint8 array."""
    if image.format != "uchar":
        image = image.cast("uchar")
    arr: npt.NDArray[Any] = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                                       shape=(image.height, image.width, image.bands))
    return arr


def to_vips(host: npt.NDArray[Any], page_height: int | None = None) -> pyvips.Image:
    """A host uint8 (H, W, C) array as a libvips image (sRGB or b-w), ready for an encoder."""
    host = np.ascontiguousarray(host, dtype=np.uint8)
    h, w, c = (int(s) for s in host.shape)
    # No copy of the pixels: pyvips keeps the buffer alive on the image new_from_memory returns, but not on a
    # .copy() of it, so the copy holds the array itself too.
    image = pyvips.Image.new_from_memory(host.data, w, h, c, "uchar").copy(interpretation=_INTERPRETATION[c])
    image._references.append(host)
    if page_height is not None and 0 < page_height < h:
        image.set_type(pyvips.GValue.gint_type, "page-height", page_height)
    return image


def download(img: Array) -> npt.NDArray[Any]:
    """Device (CuPy) or host (NumPy) array -> host NumPy array."""
    get = getattr(img, "get", None)
    return np.asarray(get() if callable(get) else img)


def upload(xp: XP, host: npt.NDArray[Any]) -> Array:
    return xp.asarray(host)


def fill(background: tuple[int, ...], channels: int, alpha: float = 255.0) -> tuple[float, ...]:
    """A background colour for an image of ``channels``: grey takes the first value; alpha appended."""
    colour = tuple(float(v) for v in background[:3]) if channels >= 3 else (float(background[0]),)
    return colour + ((alpha,) if channels in (2, 4) else ())
