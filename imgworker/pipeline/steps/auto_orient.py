"""auto_orient: rotate/flip the pixels as the EXIF Orientation tag says, and drop the tag.

On both executors the decoder usually applies it already (one orientation rule: pipeline/decode.py orients
while it decodes, so shrink-on-load sees the displayed size); the step then finds orientation 1 and does
nothing. The array executor reads the orientation still to apply from ``ctx.orientation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.arrays.orientation import orient
from imgworker.pipeline.steps.base import StepDef, flag


def orientation(image: pyvips.Image) -> int:
    return int(image.get("orientation")) if "orientation" in image.get_fields() else 1


def vips(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if not o["enabled"] or orientation(image) == 1:
        return image
    return image.autorot()


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    value = int(getattr(ctx, "orientation", 1) or 1)
    if not o["enabled"] or value == 1:
        return img
    ctx.orientation = 1
    return xp.ascontiguousarray(orient(xp, img, value))


STEP = StepDef(
    "auto_orient", "apply the EXIF orientation", {"enabled": flag(True)}, vips, array,
    scale_invariant=True, shorthand="enabled",
)
