"""Output geometry for the fit modes, shared by every backend so CPU and GPU agree to the pixel.

Meanings are sharp's: ``inside`` keeps the aspect ratio and fits within width x height; ``outside`` keeps it
and covers width x height; ``cover`` is outside then a centre crop to exactly width x height; ``contain`` is
inside then padding with the background to exactly width x height; ``fill`` stretches to width x height.
With only one of width/height given, every mode scales to that side with the aspect ratio kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgworker.core.errors import LimitExceeded
from imgworker.core.limits import Limits


@dataclass(frozen=True, slots=True)
class Geometry:
    # Size the (oriented) source is resampled to.
    resize_w: int
    resize_h: int
    # Then a crop (cover) at (left, top) of the final size, or a pad (contain) to the final size.
    final_w: int
    final_h: int
    crop_left: int = 0
    crop_top: int = 0
    pad_left: int = 0
    pad_top: int = 0

    @property
    def crops(self) -> bool:
        same = (self.resize_w, self.resize_h) == (self.final_w, self.final_h)
        return not same and self.resize_w >= self.final_w and self.resize_h >= self.final_h

    @property
    def pads(self) -> bool:
        same = (self.resize_w, self.resize_h) == (self.final_w, self.final_h)
        return not same and self.resize_w <= self.final_w and self.resize_h <= self.final_h


def _scaled(side: int, scale: float) -> int:
    return max(1, round(side * scale))


def plan(src_w: int, src_h: int, width: int | None, height: int | None, fit: str, limits: Limits) -> Geometry:
    """Where ``src_w`` x ``src_h`` is the source as displayed (after EXIF orientation)."""
    if width is None and height is None:
        raise ValueError("width or height is required")
    if width is None or height is None:
        scale = width / src_w if width is not None else height / src_h  # type: ignore[operator]
        rw = width if width is not None else _scaled(src_w, scale)
        rh = height if height is not None else _scaled(src_h, scale)
        geo = Geometry(rw, rh, rw, rh)
    elif fit == "fill":
        geo = Geometry(width, height, width, height)
    elif fit in ("inside", "contain"):
        scale = min(width / src_w, height / src_h)
        rw, rh = min(width, _scaled(src_w, scale)), min(height, _scaled(src_h, scale))
        if fit == "inside":
            geo = Geometry(rw, rh, rw, rh)
        else:
            geo = Geometry(rw, rh, width, height, pad_left=(width - rw) // 2, pad_top=(height - rh) // 2)
    elif fit in ("cover", "outside"):
        scale = max(width / src_w, height / src_h)
        rw, rh = max(width, _scaled(src_w, scale)), max(height, _scaled(src_h, scale))
        if fit == "outside":
            geo = Geometry(rw, rh, rw, rh)
        else:
            geo = Geometry(rw, rh, width, height, crop_left=(rw - width) // 2, crop_top=(rh - height) // 2)
    else:
        raise ValueError(f"unknown fit {fit!r}")
    biggest = max(geo.resize_w * geo.resize_h, geo.final_w * geo.final_h)
    if biggest > limits.max_output_pixels or max(geo.resize_w, geo.resize_h) > limits.max_output_side:
        raise LimitExceeded(
            f"output would be {geo.resize_w}x{geo.resize_h} pixels from a {src_w}x{src_h} source; the limits are "
            f"{limits.max_output_pixels} pixels and {limits.max_output_side} per side"
        )
    return geo
