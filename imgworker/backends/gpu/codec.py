"""CPU-side decode and encode for the GPU backend (libvips), and the optional nvImageCodec GPU JPEG path.

Decode does on the CPU what is cheap and branchy there: header check (before any pixel), JPEG/WebP
shrink-on-load (the DCT-domain 1/2, 1/4, 1/8 decode cuts decode time and upload bytes by up to 64x), EXIF
auto-orientation and conversion to 8-bit sRGB (CMYK via its embedded profile, 16-bit, grey kept grey) --
the same helpers as the CPU backend, so both see the same pixels before the resize.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyvips

from imgworker.arrays import image as arrays
from imgworker.core.deadline import Deadline
from imgworker.core.quality import Quality
from imgworker.imaging import heif, jpeg_fast
from imgworker.imaging.colour import to_srgb
from imgworker.imaging.encode import encode
from imgworker.imaging.errors import translate

__all__ = ["decode", "encode", "encode_array", "shrink_option"]


def shrink_option(loader: str, shrink: int) -> dict[str, Any]:
    if shrink <= 1:
        return {}
    if loader == "jpeg":
        return {"shrink": shrink}
    if loader == "webp":
        return {"scale": 1.0 / shrink}
    return {}


def decode(source: bytes, loader: str, shrink: int, fail_on: str) -> npt.NDArray[np.uint8]:
    """Decode (with shrink-on-load), auto-orient, 8-bit sRGB: an (H, W, C) uint8 array, C in 1..4."""
    try:
        if loader == heif.LOADER:  # HEVC HEIF: libvips' wheel cannot decode it; pillow-heif does, oriented, sRGB
            return arrays.from_vips(to_srgb(heif.decode(source, None)))
        # JPEGs (the progressive files routed off the GPU) take the CPU backend's libjpeg-turbo path.
        fast = jpeg_fast.decode_scaled(source, shrink) if loader == "jpeg" else None
        image = fast or pyvips.Image.new_from_buffer(source, "", fail_on=fail_on, **shrink_option(loader, shrink))
        # CMYK with its own profile, like thumbnail.
        arr: npt.NDArray[np.uint8] = arrays.from_vips(to_srgb(image.autorot(), "cmyk"))
    except pyvips.Error as exc:
        raise translate(exc, "source") from None
    return arr


def encode_array(arr: npt.NDArray[np.uint8], fmt: str, quality: Quality, background: tuple[int, int, int],
                 deadline: Deadline | None = None) -> tuple[bytes, dict[str, Any]]:
    """Encode (H, W, C) uint8 pixels with the CPU backend's encoder (same bytes for same pixels; the same
    ``quality: auto`` search on the host copy, so a gpu worker picks the quality a cpu worker would)."""
    return encode(arrays.to_vips(arr), fmt, quality, background, deadline)
