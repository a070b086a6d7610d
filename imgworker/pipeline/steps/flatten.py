"""flatten: composite the alpha channel onto a background colour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, colour


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if not image.hasalpha():
        return image
    bg = list(o["background"]) if image.bands >= 3 else [float(o["background"][0])]
    return image.flatten(background=bg).cast(image.format)


STEP = StepDef("flatten", "remove alpha onto a background", {"background": colour()}, apply,
               backends=("cpu", "gpu"), scale_invariant=True, per_pixel=True, shorthand="background")
