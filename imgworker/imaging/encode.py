"""The one libvips encoder: a pipeline's encode step and a plain resize job (backends/cpu.py, and the GPU
backend's CPU encodes) both save through ``save``, so the same pixels give the same bytes on either path.
``encode`` is a plain resize job's: flattened for JPEG, 8-bit, the encode step's defaults; with ``quality:
auto`` the search for the lowest quality that still looks right (imaging/quality/search.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyvips

from imgworker.core import budget
from imgworker.core.deadline import Deadline
from imgworker.core.formats import RESIZE_FORMATS
from imgworker.core.quality import AutoQuality, Quality
from imgworker.imaging.errors import translate
from imgworker.imaging.quality import search

# The encode step's options at their defaults: what a plain resize job encodes with.
PLAIN: Mapping[str, Any] = {"effort": None, "progressive": False, "mozjpeg": False, "palette": False,
                            "lossless": False}


def save(image: pyvips.Image, o: Mapping[str, Any], quality: int, keep: int) -> bytes:
    """``image`` (8-bit, flattened for JPEG) encoded as ``o["format"]`` with the encode step's options ``o``
    (PLAIN: what a plain resize job uses); ``keep``: libvips ForeignKeep flags (0: strip all). Raises
    pyvips.Error."""
    fmt, effort = o["format"], o["effort"]
    if fmt == "jpeg":
        moz = o["mozjpeg"]
        return bytes(image.jpegsave_buffer(
            Q=quality, keep=keep, optimize_coding=True, interlace=o["progressive"] or moz,
            trellis_quant=moz, overshoot_deringing=moz, optimize_scans=moz, quant_table=3 if moz else 0,
        ))
    if fmt == "png":
        return bytes(image.pngsave_buffer(
            keep=keep, compression=6 if effort is None else effort, palette=o["palette"], Q=quality,
        ))
    if fmt == "webp":
        return bytes(image.webpsave_buffer(
            Q=quality, keep=keep, lossless=o["lossless"], effort=4 if effort is None else min(effort, 6),
        ))
    if fmt == "avif":
        return bytes(image.heifsave_buffer(
            Q=quality, keep=keep, compression="av1", lossless=o["lossless"], effort=2 if effort is None else effort,
        ))
    return bytes(image.gifsave_buffer(keep=keep, effort=7 if effort is None else max(1, effort)))


def encode(image: pyvips.Image, fmt: str, quality: Quality, background: tuple[int, int, int],
           deadline: Deadline | None = None) -> tuple[bytes, dict[str, Any]]:
    """(bytes, the output's extra result fields: quality: auto's quality, score, probes...). The search's
    probes stop at ``deadline`` and are charged to the job's memory budget."""
    if fmt == "jpeg" and image.hasalpha():
        image = image.flatten(background=list(background))
    if image.format != "uchar":
        image = image.cast("uchar")
    if fmt not in RESIZE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    o = {**PLAIN, "format": fmt}
    try:  # the encode step's encoder at its defaults (save): one encoder for every job
        if isinstance(quality, AutoQuality):
            found, _ = search.run(image, fmt, quality.target, lambda q: save(image, o, q, keep=0),
                                  None if deadline is None else lambda: deadline.check("encode"),
                                  lambda n: budget.charge(budget.Cost(0, n)))
            return found.data, found.fields(quality.name, quality.target)
        return save(image, o, quality, keep=0), {}
    except pyvips.Error as exc:
        raise translate(exc, "output") from None
