"""The one table of image formats: what a job may write (name, file suffix, content type, default quality,
lossy, animated) and what a source may be. Every other module imports from here (contract, the encode step,
stores, batches, submit), so a format is added in one place.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Format:
    name: str  # as jobs and pipelines spell it
    suffix: str  # the file suffix outputs get, without the dot
    content_type: str
    default_quality: int  # when the job gives none (PNG's is its palette quantisation quality)
    lossy: bool
    animates: bool  # keeps every frame of an animated source (the others get the first)
    resize: bool  # a plain resize job may write it (GIF only from a pipeline)
    also: tuple[str, ...] = ()  # other suffixes that name it (".jpeg")


TABLE: dict[str, Format] = {f.name: f for f in (
    Format("jpeg", "jpg", "image/jpeg", 85, lossy=True, animates=False, resize=True, also=("jpeg",)),
    Format("png", "png", "image/png", 100, lossy=False, animates=False, resize=True),
    Format("webp", "webp", "image/webp", 80, lossy=True, animates=True, resize=True),
    Format("avif", "avif", "image/avif", 50, lossy=True, animates=False, resize=True),
    Format("gif", "gif", "image/gif", 75, lossy=False, animates=True, resize=False),
)}

OUTPUT_FORMATS = tuple(TABLE)  # what a pipeline's encode step writes
RESIZE_FORMATS = tuple(f.name for f in TABLE.values() if f.resize)  # what a plain resize job writes
LOSSY = tuple(f.name for f in TABLE.values() if f.lossy)
ANIMATED = tuple(f.name for f in TABLE.values() if f.animates)
DEFAULT_QUALITY = {f.name: f.default_quality for f in TABLE.values()}
EXTENSIONS = {f.name: f.suffix for f in TABLE.values()}  # for {ext} in dst templates
CONTENT_TYPES = {f.name: f.content_type for f in TABLE.values()}
OCTET_STREAM = "application/octet-stream"

# The decoders a source may use (libvips loader names without "load"; "heif" includes HEIC through pillow-heif).
SOURCE_LOADERS = ("jpeg", "png", "webp", "heif", "gif", "tiff")
SOURCE_NAMES = "JPEG, PNG, WebP, AVIF/HEIF, GIF, TIFF"  # how messages name them
# File suffixes a batch or ``submit`` picks up as sources in a listing.
SOURCE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".tif", ".tiff", ".heic"})
_BY_SUFFIX = {f".{s}": f.name for f in TABLE.values() if f.resize for s in (f.suffix, *f.also)}


def suffix(fmt: str) -> str:
    """The dotted file suffix for ``fmt`` (".jpg" for jpeg)."""
    return "." + EXTENSIONS[fmt]


def content_type(fmt: str) -> str:
    return CONTENT_TYPES.get(fmt, OCTET_STREAM)


def format_from_path(path: str) -> str | None:
    """The resize format a dst's suffix names (".jpg" -> jpeg), or None."""
    return _BY_SUFFIX.get(posixpath.splitext(path.lower())[1])
