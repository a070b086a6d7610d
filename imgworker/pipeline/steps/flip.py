"""flip: mirror horizontally (sharp's flop), vertically (sharp's flip) or both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.pipeline.steps.base import StepDef, choice


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    direction = o["direction"]
    if direction == "none":
        return image
    if direction in ("horizontal", "both"):
        image = image.fliphor()
    if direction in ("vertical", "both"):
        image = image.flipver()
    return image


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    direction = o["direction"]
    if direction == "none":
        return img
    if direction in ("horizontal", "both"):
        img = img[:, ::-1]
    if direction in ("vertical", "both"):
        img = img[::-1]
    return xp.ascontiguousarray(img)


STEP = StepDef(
    "flip",
    "mirror the image",
    {"direction": choice(("horizontal", "vertical", "both", "none"), "horizontal")},
    vips,
    array,
    shorthand="direction",
)
