"""A planned geometry (core/geometry.py ``plan``) applied to a resized libvips image: crop or pad to the final
size."""

from __future__ import annotations

import pyvips

from imgworker.core.geometry import Geometry


def pad(image: pyvips.Image, geo: Geometry, background: tuple[int, int, int]) -> pyvips.Image:
    """``image`` centred on ``geo``'s final size over ``background`` (opaque where there is alpha): the
    ``contain`` pad of plain resize jobs and of the pipeline resize step."""
    bg: list[float] = list(background) if image.bands >= 3 else [float(background[0])]
    if image.hasalpha():
        bg.append(255.0)
    return image.embed(geo.pad_left, geo.pad_top, geo.final_w, geo.final_h, extend="background", background=bg)


def apply_geometry(image: pyvips.Image, geo: Geometry, background: tuple[int, int, int]) -> pyvips.Image:
    if geo.crops:
        return image.crop(geo.crop_left, geo.crop_top, geo.final_w, geo.final_h)
    if geo.pads:
        return pad(image, geo, background)
    return image
