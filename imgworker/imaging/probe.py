"""The header check before any pixel is decoded: size as displayed, loader, pages; bombs and formats this
worker does not accept are refused here, and the decode's memory is admitted against the process budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from imgworker.core import budget
from imgworker.core.errors import LimitExceeded, UnsupportedImage
from imgworker.core.formats import SOURCE_LOADERS
from imgworker.core.limits import Limits
from imgworker.imaging import heif, jpeg_fast
from imgworker.imaging.errors import translate
from imgworker.imaging.orientation import shown


@dataclass(frozen=True, slots=True)
class SourceInfo:
    width: int  # as displayed, after EXIF orientation
    height: int
    loader: str
    pages: int
    has_alpha: bool
    orientation: int = 1
    cmyk: bool = False
    # For the memory estimate (budget.py): how the loader will decode it.
    bands: int = 3
    bytes_per_sample: int = 1
    interlaced: bool = False  # interlaced PNG or progressive JPEG: decoded whole

    @property
    def shown_size(self) -> tuple[int, int] | None:
        """(width, height) as displayed, for a single picture (None for several pages: each page's size is
        what counts there, and a multi-page header may give the whole strip's)."""
        return (self.width, self.height) if self.pages == 1 else None


def probe(source: bytes, limits: Limits) -> SourceInfo:
    """Header-only open (~ms): refuse bombs before any pixel is decoded."""
    if not source:
        raise UnsupportedImage("source is empty (0 bytes)")
    if heif.handles(source):  # HEVC HEIF: libvips' wheel cannot decode it; pillow-heif reads the header
        h = heif.probe(source, limits)
        budget.charge(budget.estimate(width=h.width, height=h.height, bands=4 if h.has_alpha else 3,
                                      bytes_per_sample=1, loader=heif.LOADER, whole=True, out_width=0,
                                      out_height=0, fmt="jpeg", source_bytes=len(source)))
        return SourceInfo(h.width, h.height, heif.LOADER, h.pages, h.has_alpha)
    frame = jpeg_fast.fast_header(source)
    if frame is not None:  # a JPEG the fast path decodes: its markers are all the header check needs
        return _fast_jpeg_info(frame, limits, len(source))
    try:
        image = pyvips.Image.new_from_buffer(source, "", access="sequential")
        fields = set(image.get_fields())
        orientation = image.get("orientation") if "orientation" in fields else 1
        pages = image.get("n-pages") if "n-pages" in fields else 1
        loader = image.get("vips-loader")
    except pyvips.Error as exc:
        raise translate(exc, "source") from None
    loader = loader.replace("load_buffer", "").replace("load_source", "").replace("load", "")
    if loader not in SOURCE_LOADERS:
        # libvips also decodes SVG (librsvg: filter graphs whose cost no header bounds), PDF, FITS, Matlab,
        # ImageMagick's dozens of formats...: each is attack surface, and a job carries photos.
        raise UnsupportedImage(f"source is {loader.upper()}, which this worker does not accept; "
                               "use JPEG, PNG, WebP, AVIF/HEIF, GIF or TIFF")
    width, height = shown(image.width, image.height, orientation)
    if width * height > limits.max_source_pixels:
        raise LimitExceeded(
            f"source is {width}x{height} = {width * height} pixels; the limit is {limits.max_source_pixels}"
        )
    cmyk = image.interpretation == "cmyk"
    interlaced = bool(image.get("interlaced")) if "interlaced" in fields else False
    sample = 2 if image.format in ("ushort", "short") else 4 if image.format in ("float", "uint", "int") else 1
    info = SourceInfo(width, height, loader, pages, image.hasalpha(), orientation, cmyk, image.bands, sample,
                      interlaced)
    # The decode's memory, admitted against the process budget for the rest of the job (waits or refuses).
    budget.charge(budget.estimate(width=width, height=height, bands=image.bands, bytes_per_sample=sample,
                                  loader=loader, whole=interlaced, out_width=0, out_height=0, fmt="jpeg",
                                  source_bytes=len(source)))
    return info


def output_cost(info: SourceInfo, out_width: int, out_height: int, fmt: str) -> budget.Cost:
    """What the output and its encoder hold (the decode was charged by probe)."""
    return budget.estimate(width=0, height=0, bands=info.bands, bytes_per_sample=1, loader=info.loader,
                           whole=False, out_width=out_width, out_height=out_height, fmt=fmt)


def _fast_jpeg_info(frame: jpeg_fast.Frame, limits: Limits, source_bytes: int) -> SourceInfo:
    """The header check from the JPEG markers alone (no libvips header open): the same limits as below."""
    width, height = shown(frame.width, frame.height, frame.orientation)
    if width * height > limits.max_source_pixels:
        raise LimitExceeded(
            f"source is {width}x{height} = {width * height} pixels; the limit is {limits.max_source_pixels}"
        )
    progressive = frame.sof == 0xC2  # libvips' "interlaced": the decoder holds every coefficient at once
    info = SourceInfo(width, height, "jpeg", 1, False, frame.orientation, False, frame.components, 1, progressive)
    budget.charge(budget.estimate(width=width, height=height, bands=frame.components, bytes_per_sample=1,
                                  loader="jpeg", whole=progressive, out_width=0, out_height=0, fmt="jpeg",
                                  source_bytes=source_bytes))
    return info
