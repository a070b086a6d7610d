"""Image facts for the job result: ``meta``, ``thumbhash``, ``blurhash``, ``dominant``, ``phash``.

A job asks for them with ``"analyze": [...]`` (resize and pipeline jobs, a pipeline's ``analyze:``, the
``info`` function). ``meta`` reads the source's header; the others are pure functions of one small image
(small.py) made from the pixels the job already decoded. docs/contract.md describes each value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pyvips

from imgworker.analysis import blurhash, dominant, phash, thumbhash
from imgworker.analysis.meta import describe
from imgworker.analysis.small import Small, prepare
from imgworker.core.contract import FACTS

# Pixel facts: name -> function of the small image. ``meta`` is the header fact (no pixels).
PIXEL_FACTS: dict[str, Callable[[Small], Any]] = {
    "thumbhash": lambda s: thumbhash.encode_base64(s.rgba),
    "blurhash": lambda s: blurhash.encode(s.rgb),
    "dominant": lambda s: dominant.palette(s.rgba),
    "phash": lambda s: phash.encode(s.grey32),
}
if ("meta", *PIXEL_FACTS) != FACTS:  # the contract names the facts; this module computes each of them
    raise ImportError(f"analysis computes {('meta', *PIXEL_FACTS)}, the contract names {FACTS}")


def merge(*lists: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for names in lists for name in names))


def needs_pixels(facts: Iterable[str]) -> bool:
    return any(name in PIXEL_FACTS for name in facts)


def of_decoded(image: pyvips.Image, source: bytes, facts: tuple[str, ...], *, oriented: bool = True,
               timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The facts of a job's decoded image (in memory; ``oriented`` False when the job kept EXIF's turn)."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if "meta" in facts:
        out["meta"] = describe(source)
    if needs_pixels(facts):
        small = prepare(image, oriented)
        for name in facts:
            if name in PIXEL_FACTS:
                out[name] = PIXEL_FACTS[name](small)
    if timings is not None:
        timings["analysis"] = timings.get("analysis", 0.0) + (time.perf_counter() - t0) * 1000
    return out
