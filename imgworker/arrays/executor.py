"""The array executor: a pipeline's steps on an (H, W, C) ``xp`` array, and the way back to an encoder.

The job thread decodes (libvips, shrink-on-load, sRGB: pipeline/decode.py), then hands one closure to the
backend's batcher (``run_array``): upload, the shared steps, each output's resize and steps, download. The
batch thread runs the closures of concurrent jobs back to back on the device (NumPy: on the CPU), and the
job thread encodes the downloaded pixels with the same encoder as the vips executor.

Animations (frames stacked vertically): a per-pixel step runs on the whole strip, any other step frame by
frame, like pipeline/frames.map_frames on the vips side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
import pyvips

from imgworker.arrays import image as arrays
from imgworker.imaging.metadata import keep_only

XP = Any
# Metadata fields an output may keep (the metadata step decides which; see steps/metadata.py).
_META_PREFIXES = ("exif-", "icc-profile-data", "xmp-data", "iptc-data")


@dataclass
class Frames:
    """An array and the height of one frame (None: a still image)."""

    img: Any
    page_height: int | None = None


def apply(xp: XP, step: Any, options: dict[str, Any], frames: Frames, ctx: Any) -> Frames:
    """One step's array executor on a still image or on each frame of an animation."""
    img, ph = frames.img, frames.page_height
    if step.per_pixel or ph is None or ph >= int(img.shape[0]):
        return Frames(step.array(xp, img, options, ctx), ph)
    parts = [step.array(xp, img[top : top + ph], options, ctx) for top in range(0, int(img.shape[0]), ph)]
    return Frames(xp.concatenate([xp.asarray(p) for p in parts], axis=0), int(parts[0].shape[0]))


def run_steps(xp: XP, steps: Sequence[tuple[Any, dict[str, Any]]], frames: Frames, ctx: Any) -> Frames:
    for step, options in steps:
        ctx.check_deadline(step.name)
        ctx.before(step.name)
        frames = apply(xp, step, options, frames, ctx)
    return frames


def to_encoder(host: npt.NDArray[Any], page_height: int | None, source: pyvips.Image | None,
               keep: tuple[str, ...], ctx: Any) -> pyvips.Image:
    """Downloaded uint8 pixels as the libvips image an encoder takes, with the metadata the job keeps."""
    image = arrays.to_vips(host, page_height)
    if not keep or source is None:
        return image
    for name in source.get_fields():
        if name.startswith(_META_PREFIXES):
            image.set_type(source.get_typeof(name), name, source.get(name))
    ctx.keep = tuple(sorted(set(keep)))  # what the encoder keeps of this output (steps/encode.py keep_flags)
    return keep_only(image, keep)
