"""rotate: by a multiple of 90 degrees (lossless), or any angle with the corners filled by a background."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, colour, number


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    angle = o["angle"] % 360
    if angle == 0:
        return image
    if angle % 90 == 0:
        return image.rot(f"d{int(angle)}")
    bg: list[float] = list(o["background"]) if image.bands >= 3 else [float(o["background"][0])]
    if image.hasalpha():
        bg.append(0.0)  # transparent corners when there is alpha
    # libvips rotates anticlockwise for positive angles; sharp and CSS turn clockwise.
    return image.rotate(-angle, background=bg)


def _gpu(o: Mapping[str, Any]) -> str | None:
    return None if o["angle"] % 90 == 0 else f"angle {o['angle']:g} (not a multiple of 90) runs on cpu only"


STEP = StepDef(
    "rotate",
    "turn clockwise by an angle",
    {"angle": number(-360, 360), "background": colour()},
    apply,
    backends=("cpu", "gpu"),
    shorthand="angle",
    gpu_refuses=_gpu,
)
