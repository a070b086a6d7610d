"""auto_orient: rotate/flip the pixels as the EXIF Orientation tag says, and drop the tag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, flag


def orientation(image: pyvips.Image) -> int:
    return int(image.get("orientation")) if "orientation" in image.get_fields() else 1


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if not o["enabled"] or orientation(image) == 1:
        return image
    return image.autorot()


STEP = StepDef(
    "auto_orient", "apply the EXIF orientation", {"enabled": flag(True)}, apply,
    backends=("cpu", "gpu"), scale_invariant=True, shorthand="enabled",
)
