"""extract: cut a fixed region (left, top, width, height in pixels), clipped to the image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from ...errors import BadRequest
from .base import StepDef, integer


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    left, top = o["left"], o["top"]
    if (left, top) == (0, 0) and o["width"] >= image.width and o["height"] >= image.height:
        return image
    w, h = min(o["width"], image.width - left), min(o["height"], image.height - top)
    if w <= 0 or h <= 0:
        raise BadRequest(
            f"extract at ({left}, {top}) is outside the {image.width}x{image.height} image"
        )
    return image.crop(left, top, w, h)


STEP = StepDef(
    "extract",
    "cut a fixed pixel region",
    {
        "left": integer(0, 16_383, 0),
        "top": integer(0, 16_383, 0),
        "width": integer(1, 16_384),
        "height": integer(1, 16_384),
    },
    apply,
    backends=("cpu", "gpu"),
)
