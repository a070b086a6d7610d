"""crop: cut to width x height (no scaling) at a gravity, a smart-crop position or the focal point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from . import gravity
from .base import StepDef, choice, integer


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    w = min(o["width"] or image.width, image.width)
    h = min(o["height"] or image.height, image.height)
    if (w, h) == (image.width, image.height):
        return image
    return gravity.crop(image, w, h, o["gravity"], ctx)


def _gpu(o: Mapping[str, Any]) -> str | None:
    return f"gravity {o['gravity']!r} (smart crop) runs on cpu only" if o["gravity"] in gravity.SMART else None


STEP = StepDef(
    "crop",
    "cut to a size at a gravity / smart position",
    {
        "width": integer(1, 16_384, None),
        "height": integer(1, 16_384, None),
        "gravity": choice(gravity.POSITIONS, "centre"),
    },
    apply,
    backends=("cpu", "gpu"),
    gpu_refuses=_gpu,
)
