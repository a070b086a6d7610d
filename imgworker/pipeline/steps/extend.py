"""extend: add padding on each side, filled with a background colour or copied/mirrored edges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from .base import StepDef, choice, colour, integer

MODES = ("background", "copy", "mirror", "repeat")


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    top, right, bottom, left = o["top"], o["right"], o["bottom"], o["left"]
    if not (top or right or bottom or left):
        return image
    bg: list[float] = list(o["background"]) if image.bands >= 3 else [float(o["background"][0])]
    if image.hasalpha():
        bg.append(255.0)
    w, h = image.width + left + right, image.height + top + bottom
    return image.embed(left, top, w, h, extend=o["mode"], background=bg)


STEP = StepDef(
    "extend",
    "pad the edges",
    {
        "top": integer(0, 4096, 0),
        "right": integer(0, 4096, 0),
        "bottom": integer(0, 4096, 0),
        "left": integer(0, 4096, 0),
        "background": colour(),
        "mode": choice(MODES, "background"),
    },
    apply,
    backends=("cpu", "gpu"),
)
