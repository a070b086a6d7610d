"""blur: Gaussian blur with a sigma in pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, number


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    if o["sigma"] < 0.3:  # below this a Gaussian changes nothing visible
        return image
    fmt = image.format
    return image.gaussblur(o["sigma"]).cast(fmt)


STEP = StepDef("blur", "Gaussian blur", {"sigma": number(0, 1000)}, apply, backends=("cpu", "gpu"),
               shorthand="sigma")
