"""Decode once, as small as the pipeline allows (shrink-on-load), and materialise with a deadline.

A JPEG decodes at 1/2, 1/4 or 1/8 scale and WebP at any scale when the result is at least the size the
pipeline needs, which is most of the cost saved: so the decoder targets the first resize when only
scale-invariant steps come before it, or else the largest output when the outputs are the only resizes.
JPEGs take the smallest-scale decode (``load_jpeg_resized``, imaging/load.py), not libvips thumbnail's choice,
which keeps a factor of 2 spare (a 20 MP photo would decode at full size for a 1024-2048 px target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyvips

from imgworker.core.errors import LimitExceeded
from imgworker.core.limits import Limits
from imgworker.imaging import heif, orientation
from imgworker.imaging.errors import translate
from imgworker.imaging.kill import kill_at
from imgworker.imaging.load import NO_SHRINK_ON_LOAD, load_jpeg_resized
from imgworker.imaging.probe import probe
from imgworker.pipeline.context import StepContext
from imgworker.pipeline.steps import StepDef
from imgworker.pipeline.steps import resize as resize_step

ANIMATED_LOADERS = ("gif", "webp")
DECODE_KERNEL = "lanczos3"  # what libvips thumbnail resamples with; another kernel needs a full decode


@dataclass(frozen=True, slots=True)
class Header:
    width: int  # as stored (before EXIF orientation)
    height: int  # of one frame
    orientation: int
    pages: int
    loader: str
    cmyk: bool = False

    def shown(self, orient: bool) -> tuple[int, int]:
        return orientation.shown(self.width, self.height, self.orientation if orient else 1)


def header(source: bytes, limits: Limits) -> Header:
    """Header-only open (milliseconds): refuse bombs before any pixel is decoded (imaging/probe.py)."""
    info = probe(source, limits)
    width, height = orientation.shown(info.width, info.height, info.orientation)  # back to as stored
    return Header(width, height, info.orientation, info.pages, info.loader, info.cmyk)


def animated(head: Header, keep: bool, limits: Limits) -> bool:
    if not keep or head.pages < 2 or head.loader not in ANIMATED_LOADERS:
        return False
    if head.pages > limits.max_frames:
        raise LimitExceeded(f"source has {head.pages} frames; the limit is {limits.max_frames} "
                            "(or use a pipeline with `animation: first`)")
    if head.width * head.height * head.pages > limits.max_source_pixels:
        raise LimitExceeded(f"source is {head.pages} frames of {head.width}x{head.height}; the limit is "
                            f"{limits.max_source_pixels} pixels in all")
    return True


def target(shown: tuple[int, int], shared: Sequence[tuple[StepDef, dict[str, Any]]],
           output_resizes: Sequence[dict[str, Any] | None], limits: Limits) -> tuple[int, int] | None:
    """Size to decode at, or None for full size."""
    w, h = shown
    for step, options in shared:
        if step.name == "resize":
            if options["kernel"] != DECODE_KERNEL:
                return None  # the libvips thumbnail would resample with its own kernel instead
            geo = resize_step.target(w, h, options, limits)
            if geo is None or geo.resize_w >= w or geo.resize_h >= h:
                return None
            return geo.resize_w, geo.resize_h
        if not step.scale_invariant:
            return None
    scale = 0.0
    for wanted in output_resizes:
        if wanted is None or wanted["kernel"] != DECODE_KERNEL:
            return None
        geo = resize_step.target(w, h, wanted, limits)
        if geo is None:
            return None
        scale = max(scale, geo.resize_w / w, geo.resize_h / h)
    if not output_resizes or scale >= 1:
        return None
    # One scale for all outputs, so every output keeps the source's aspect ratio when derived.
    return max(1, round(w * scale)), max(1, round(h * scale))


def decode(source: bytes, size: tuple[int, int] | None, *, fail_on: str, orient: bool, frames: bool,
           head: Header | None = None, metadata: bool = False, loaded: list[Any] | None = None) -> pyvips.Image:
    """The one decode of a pipeline job (tests count calls to this); ``head`` enables the JPEG fast path.
    The loader's image, the one that does the work, is appended to ``loaded`` where there is one to reach:
    ``materialise`` kills it at the deadline (imaging/kill.py), as a plain resize does."""
    options = f"fail_on={fail_on}" + (",n=-1" if frames else "")
    loaded = [] if loaded is None else loaded
    try:
        if head is not None and head.loader == heif.LOADER:  # HEVC HEIF: pillow-heif decodes, libvips resizes
            return heif.decode(source, size)
        if size is not None and head is not None and head.loader == "jpeg" and head.pages == 1:
            return load_jpeg_resized(source, head.shown(orient), size, fail_on=fail_on, cmyk=head.cmyk,
                                     orientation=head.orientation, rotate=orient, metadata=metadata,
                                     loaded=loaded)
        if size is not None and not (head is not None and head.loader in NO_SHRINK_ON_LOAD and not frames):
            return pyvips.Image.thumbnail_buffer(source, size[0], height=size[1], size="force",
                                                 no_rotate=not orient, option_string=options)
        # No shrink-on-load (PNG, TIFF, GIF) or full size: open the loader's image ourselves so it can be killed.
        image = pyvips.Image.new_from_buffer(source, options, access="sequential" if size else "random")
        loaded.append(image)
        if size is not None:
            return image.thumbnail_image(size[0], height=size[1], size="force", no_rotate=not orient)
        return image.autorot() if orient else image
    except pyvips.Error as exc:
        raise translate(exc, "source") from None


def materialise(image: pyvips.Image, ctx: StepContext, stage: str) -> pyvips.Image:
    """Compute ``image`` into memory; at the deadline libvips' kill flag is set on it and on the decoder's
    images (``ctx.loaded``: a large decode with a small output is loader strips, not output tiles): TIMEOUT."""
    ctx.check_deadline(stage)
    # A fresh wrapper per evaluation: the kill flag must not stay on an image that is evaluated again later.
    watched = image.copy()
    try:
        with kill_at(ctx.deadline, watched, *ctx.loaded):
            return watched.copy_memory()
    except pyvips.Error as exc:
        if ctx.deadline.passed():
            raise ctx.deadline.timeout(stage) from None
        raise translate(exc, "source") from None
