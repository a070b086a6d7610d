"""Animated images: libvips holds all frames as one tall strip with a ``page-height``."""

from __future__ import annotations

from collections.abc import Callable

import pyvips


def page_height(image: pyvips.Image) -> int:
    if "page-height" not in image.get_fields():
        return image.height
    ph = int(image.get("page-height"))
    return ph if 0 < ph < image.height and image.height % ph == 0 else image.height


def is_animated(image: pyvips.Image) -> bool:
    return page_height(image) < image.height


def first(image: pyvips.Image) -> pyvips.Image:
    if not is_animated(image):
        return image
    out = image.crop(0, 0, image.width, page_height(image)).copy()
    out.remove("page-height")
    return out


def map_frames(image: pyvips.Image, fn: Callable[[pyvips.Image], pyvips.Image]) -> pyvips.Image:
    """Apply a geometric step to each frame and re-stack them (every frame must come out the same size)."""
    if not is_animated(image):
        return fn(image)
    ph = page_height(image)
    frames = [fn(image.crop(0, top, image.width, ph)) for top in range(0, image.height, ph)]
    out = pyvips.Image.arrayjoin(frames, across=1).copy()
    out.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    return out
