"""encode: JPEG (progressive, mozjpeg-style), PNG (palette), WebP, AVIF, GIF; ``max_bytes`` lowers quality;
``quality: auto`` searches for the lowest quality that still looks right (imgworker/imaging/quality/search.py).

An animation stays animated in GIF and WebP; JPEG, PNG and AVIF get its first frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.core import budget
from imgworker.core.errors import LimitExceeded
from imgworker.core.formats import ANIMATED, DEFAULT_QUALITY, LOSSY, OUTPUT_FORMATS
from imgworker.core.options import quality as quality_opt
from imgworker.core.quality import AutoQuality, check_auto
from imgworker.imaging.colour import to_srgb
from imgworker.imaging.encode import save
from imgworker.imaging.quality import search
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


def encode(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> tuple[bytes, dict[str, Any]]:
    """(bytes, the output's result fields: ``quality`` under max_bytes, the search's fields under auto).
    Over ``max_bytes`` even at ``min_quality``: LIMIT_EXCEEDED."""
    image = prepare(image, o)
    keep = keep_flags(getattr(ctx, "keep", ()), image)
    if isinstance(o["quality"], AutoQuality):
        return _auto(image, o, ctx, keep, o["quality"])
    quality = o["quality"] or DEFAULT_QUALITY[o["format"]]
    data = save(image, o, quality, keep)
    limit = o["max_bytes"]
    if not limit or len(data) <= limit:
        return data, ({"quality": quality} if limit else {})
    if o["format"] not in LOSSY or o["lossless"]:
        raise LimitExceeded(f"{o['format']} output is {len(data)} bytes; max_bytes is {limit} (use a lossy format)")
    data, quality = _fit(image, o, ctx, keep, quality - 1)
    return data, {"quality": quality}


def _fit(image: pyvips.Image, o: Mapping[str, Any], ctx: Any, keep: int, hi: int) -> tuple[bytes, int]:
    """The best quality from ``min_quality`` to ``hi`` whose file fits ``max_bytes``, by bisection (sizes grow
    with quality); LIMIT_EXCEEDED when none does."""
    limit = o["max_bytes"]
    lo, best = o["min_quality"], None
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


def _auto(image: pyvips.Image, o: Mapping[str, Any], ctx: Any, keep: int, auto: AutoQuality) -> tuple[bytes,
                                                                                                      dict[str, Any]]:
    """``quality: auto``: the search, its probes under the job's deadline and memory budget; then ``max_bytes``,
    which wins over the target (a smaller quality, scored again, ``limited_by: max_bytes``)."""
    check_auto(o["format"], auto, o["lossless"])
    found, pixels = search.run(image, o["format"], auto.target, lambda q: save(image, o, q, keep),
                               lambda: ctx.check_deadline("encode"), lambda n: budget.charge(budget.Cost(0, n)))
    limit = o["max_bytes"]
    if limit and len(found.data) > limit:
        if found.quality <= o["min_quality"]:
            raise LimitExceeded(f"{o['format']} output does not fit max_bytes {limit} even at quality "
                                f"{o['min_quality']}")
        data, quality = _fit(image, o, ctx, keep, found.quality - 1)
        found = found.capped(data, quality, search.measure(pixels, data, o["format"]))
    return found.data, found.fields(auto.name, auto.target)


def validate(o: Mapping[str, Any]) -> None:
    """What the options cannot say alone: ``quality: auto`` needs JPEG, WebP or AVIF, lossy (BadRequest)."""
    check_auto(o["format"], o["quality"], o["lossless"])


def apply(image: pyvips.Image, o: Mapping[str, Any], ctx: Any) -> pyvips.Image:
    return image  # encoding is the output's last act (run.py calls encode); this keeps the StepDef shape


def array(xp: Any, img: Any, o: Mapping[str, Any], ctx: Any) -> Any:
    return img  # both executors encode with ``encode`` below, from the downloaded pixels on the array one


STEP = StepDef(
    "encode",
    "write one output format",
    {
        "format": choice(OUTPUT_FORMATS),
        "quality": quality_opt(),
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
