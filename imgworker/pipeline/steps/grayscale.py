"""grayscale: convert to one grey channel (alpha kept)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, flag


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if not o["enabled"] or image.interpretation in ("b-w", "grey16"):
        return image
    return image.colourspace("b-w")


STEP = StepDef("grayscale", "to grey", {"enabled": flag(True)}, apply, backends=("cpu", "gpu"),
               scale_invariant=True, per_pixel=True, shorthand="enabled")
