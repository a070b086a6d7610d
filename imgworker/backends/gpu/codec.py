"""CPU-side decode and encode for the GPU backend (libvips), and the optional nvImageCodec GPU JPEG path.

Decode does on the CPU what is cheap and branchy there: header check (before any pixel), JPEG/WebP
shrink-on-load (the DCT-domain 1/2, 1/4, 1/8 decode cuts decode time and upload bytes by up to 64x), EXIF
auto-orientation and conversion to 8-bit sRGB (CMYK via its embedded profile, 16-bit, grey kept grey) --
the same helpers as the CPU backend, so both see the same pixels before the resize.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

from imgworker.arrays import image as arrays
from imgworker.backends.cpu import _translate, encode, to_srgb8
from imgworker.core.geometry import Geometry
from imgworker.core.quality import Quality
from imgworker.imaging import heif, jpeg_fast

__all__ = ["decode", "encode", "encode_array", "jpeg_shrink", "shrink_option"]


def jpeg_shrink(src_w: int, src_h: int, geo: Geometry) -> int:
    """Shrink-on-load factor (1, 2, 4 or 8), picked like libvips' thumbnail (used for WebP).

    The DCT shrink is a block average that adds some aliasing, so like libvips we leave at least a factor of
    two for the real (Lanczos) resize.
    """
    factor = min(src_w / geo.resize_w, src_h / geo.resize_h)
    for shrink in (8, 4, 2):
        if factor >= 2 * shrink:
            return shrink
    return 1


def shrink_option(loader: str, shrink: int) -> dict[str, Any]:
    if shrink <= 1:
        return {}
    if loader == "jpeg":
        return {"shrink": shrink}
    if loader == "webp":
        return {"scale": 1.0 / shrink}
    return {}


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    if image.interpretation == "cmyk" and "icc-profile-data" in image.get_fields():
        # Like thumbnail: convert CMYK with its own profile, not libvips' generic one.
        image = image.icc_transform("srgb", embedded=True, input_profile="cmyk")
    return to_srgb8(image)


def decode(source: bytes, loader: str, shrink: int, fail_on: str) -> npt.NDArray[np.uint8]:
    """Decode (with shrink-on-load), auto-orient, 8-bit sRGB: an (H, W, C) uint8 array, C in 1..4."""
    try:
        if loader == heif.LOADER:  # HEVC HEIF: libvips' wheel cannot decode it; pillow-heif does, oriented, sRGB
            return arrays.from_vips(to_srgb8(heif.decode(source, None)))
        # JPEGs (the progressive files routed off the GPU) take the CPU backend's libjpeg-turbo path.
        fast = jpeg_fast.decode_scaled(source, shrink) if loader == "jpeg" else None
        image = fast or pyvips.Image.new_from_buffer(source, "", fail_on=fail_on, **shrink_option(loader, shrink))
        arr: npt.NDArray[np.uint8] = arrays.from_vips(to_srgb(image.autorot()))
    except pyvips.Error as exc:
        raise _translate(exc, "source") from None
    return arr


def encode_array(arr: npt.NDArray[np.uint8], fmt: str, quality: Quality, background: tuple[int, int, int],
                 check: Callable[[], None] | None = None) -> tuple[bytes, dict[str, Any]]:
    """Encode (H, W, C) uint8 pixels with the CPU backend's encoder (same bytes for same pixels; the same
    ``quality: auto`` search on the host copy, so a gpu worker picks the quality a cpu worker would)."""
    return encode(arrays.to_vips(arr), fmt, quality, background, check)
