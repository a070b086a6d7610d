"""Facts straight from a source's bytes, for a job that has no decoded image of its own to offer (``info``, a GPU
resize, a pipeline on the array executor): the header check first, then at most one small decode.

Only the header is read for ``meta``; the pixel facts decode one small image with shrink-on-load (a JPEG
at 1/8 scale when that still covers 100 px), so this costs a fraction of a thumbnail job.
"""

from __future__ import annotations

from typing import Any

import pyvips

from imgworker.analysis import needs_pixels, of_decoded
from imgworker.analysis.thumbhash import MAX_SIDE
from imgworker.core.limits import Limits
from imgworker.imaging import heif
from imgworker.imaging.errors import translate
from imgworker.imaging.probe import probe


def decode_small(source: bytes, fail_on: str) -> pyvips.Image:
    """The source at most 100x100, oriented, in memory (shrink-on-load; HEVC HEIF through pillow-heif)."""
    try:
        if heif.handles(source):
            image = heif.resized(source, (MAX_SIDE, MAX_SIDE), inside=True)
        else:
            image = pyvips.Image.thumbnail_buffer(source, MAX_SIDE, height=MAX_SIDE,
                                                  option_string=f"fail_on={fail_on}")
        return image.copy_memory()
    except pyvips.Error as exc:
        raise translate(exc, "source") from None


def facts_of_source(source: bytes, facts: tuple[str, ...], limits: Limits, fail_on: str = "warning",
                    timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Facts from the source bytes: header check first (limits), then one small decode if a fact needs it."""
    probe(source, limits)
    image = decode_small(source, fail_on) if needs_pixels(facts) else pyvips.Image.black(1, 1)
    return of_decoded(image, source, facts, timings=timings)
