"""encode: JPEG (progressive, mozjpeg-style), PNG (palette), WebP, AVIF, GIF; ``max_bytes`` lowers quality.

An animation stays animated in GIF and WebP; JPEG, PNG and AVIF get its first frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.core.errors import LimitExceeded
from imgworker.core.formats import ANIMATED, DEFAULT_QUALITY, LOSSY, OUTPUT_FORMATS
from imgworker.imaging.colour import to_srgb
from imgworker.imaging.encode import save
from imgworker.pipeline import frames
from imgworker.pipeline.steps.base import StepDef, choice, colour, flag, integer
from imgworker.pipeline.steps.metadata import keep_flags

_QUALITY_STEPS = 6  # bisection rounds for max_bytes: quality to within ~1 of the best that fits


def prepare(image: pyvips.Image, o: Mapping[str, Any]) -> pyvips.Image:
    """What the encoder gets: 8-bit, flattened for JPEG, a single frame unless the format animates."""
    if o["format"] not in ANIMATED:
        image = frames.first(image)
    if image.format != "uchar":
        image = to_srgb(image, "any")
    if o["format"] == "jpeg" and image.hasalpha():
        bg = list(o["background"]) if image.bands >= 3 else [float(o["background"][0])]
        image = image.flatten(background=bg).cast("uchar")
    return image


def encode(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> tuple[bytes, int]:
    """(bytes, quality used). Over ``max_bytes`` even at ``min_quality``: LIMIT_EXCEEDED."""
    image = prepare(image, o)
    keep = keep_flags(getattr(ctx, "keep", ()), image)
    quality = o["quality"] or DEFAULT_QUALITY[o["format"]]
    data = save(image, o, quality, keep)
    limit = o["max_bytes"]
    if not limit or len(data) <= limit:
        return data, quality
    if o["format"] not in LOSSY or o["lossless"]:
        raise LimitExceeded(f"{o['format']} output is {len(data)} bytes; max_bytes is {limit} (use a lossy format)")
    # Bisect quality between min_quality and quality for the best that fits (sizes grow with quality).
    lo, hi, best = o["min_quality"], quality - 1, None
    for _ in range(_QUALITY_STEPS):
        if lo > hi:
            break
        ctx.check_deadline("encode")
        mid = (lo + hi) // 2
        attempt = save(image, o, mid, keep)
        if len(attempt) <= limit:
            best, lo = (attempt, mid), mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise LimitExceeded(
            f"{o['format']} output does not fit max_bytes {limit} even at quality {o['min_quality']}"
        )
    return best


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    return image  # encoding is the output's last act (run.py calls encode); this keeps the StepDef shape


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    return img  # both executors encode with ``encode`` below, from the downloaded pixels on the array one


STEP = StepDef(
    "encode",
    "write one output format",
    {
        "format": choice(OUTPUT_FORMATS),
        "quality": integer(1, 100, None),
        "effort": integer(0, 9, None),
        "progressive": flag(False),
        "mozjpeg": flag(False),
        "palette": flag(False),
        "lossless": flag(False),
        "max_bytes": integer(0, 100 * 1024 * 1024, 0),
        "min_quality": integer(1, 100, 30),
        "background": colour(),
    },
    apply,
    array,
    shorthand="format",
)
