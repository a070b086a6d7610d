"""extract: cut a fixed region (left, top, width, height in pixels), clipped to the image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.core.errors import BadRequest
from imgworker.pipeline.steps.base import StepDef, integer


def region(o: Mapping[str, Any], width: int, height: int) -> tuple[int, int, int, int] | None:
    """(left, top, w, h) to cut, or None when the region covers the whole image."""
    left, top = o["left"], o["top"]
    if (left, top) == (0, 0) and o["width"] >= width and o["height"] >= height:
        return None
    w, h = min(o["width"], width - left), min(o["height"], height - top)
    if w <= 0 or h <= 0:
        raise BadRequest(f"extract at ({left}, {top}) is outside the {width}x{height} image")
    return left, top, w, h


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    box = region(o, image.width, image.height)
    if box is None:
        return image
    return image.crop(*box)


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    box = region(o, int(img.shape[1]), int(img.shape[0]))
    if box is None:
        return img
    left, top, w, h = box
    return img[top : top + h, left : left + w]


STEP = StepDef(
    "extract",
    "cut a fixed pixel region",
    {
        "left": integer(0, 16_383, 0),
        "top": integer(0, 16_383, 0),
        "width": integer(1, 16_384),
        "height": integer(1, 16_384),
    },
    vips,
    array,
)
